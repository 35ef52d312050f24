"""The process-wide settings an engine makes (gifnet_ros.fusion.process), on any machine.

torch.backends' TF32 switches can be set without a CUDA device, so the CUDA rule is checked
here with a device object alone; every setting is put back afterwards.
"""

from __future__ import annotations

import pytest
import torch

from gifnet_ros.fusion import process


@pytest.fixture
def saved_settings():
    saved = (
        torch.get_num_threads(),
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
    )
    yield
    torch.set_num_threads(saved[0])
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved[1:]


def _tf32() -> tuple[bool, bool]:
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


@pytest.mark.usefixtures("saved_settings")
def test_fp32_on_cuda_turns_tf32_off():
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    process.configure_process(torch.device("cuda"), "onnxruntime", "fp16", None)
    assert _tf32() == (True, True)  # another precision leaves them as they are
    process.configure_process(torch.device("cpu"), "onnxruntime", "fp32", None)
    assert _tf32() == (True, True)  # so does the CPU
    process.configure_process(torch.device("cuda"), "onnxruntime", "fp32", None)
    assert _tf32() == (False, False)


@pytest.mark.usefixtures("saved_settings")
def test_threads_are_set_for_the_process_or_refused():
    process.configure_process(torch.device("cpu"), "onnxruntime", "fp32", 1)
    assert torch.get_num_threads() == 1
    with pytest.raises(ValueError, match="threads must be at least 1, got 0"):
        process.configure_process(torch.device("cpu"), "onnxruntime", "fp32", 0)


def test_the_torch_cpu_backend_keeps_freed_memory(monkeypatch):
    calls = []
    monkeypatch.setattr(process, "retain_freed_memory", lambda: calls.append(True))
    process.configure_process(torch.device("cpu"), "onnxruntime", "fp32", None)
    process.configure_process(torch.device("cuda"), "torch", "fp16", None)
    assert calls == []  # ONNX Runtime's arena and CUDA memory are not malloc's
    process.configure_process(torch.device("cpu"), "torch", "bf16", None)
    assert calls == [True]
