"""Automatic precision: the selection rule per case, and the numerics of every precision it
can choose against the authors' reference outputs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from conftest import REFERENCE, REFERENCE_CASES

from gifnet_ros.fusion.engine import FusionEngine
from gifnet_ros.fusion.precision import (
    Capabilities,
    choose_backend,
    choose_precision,
    instruction_set,
    probe,
)
from gifnet_ros.models.gifnet import load_model

pytestmark = pytest.mark.shared

# Fake capability probes (what this machine cannot show: other CPUs, GPUs), named as such.
FAKE_BF16_CPU = Capabilities(cpu_flags=frozenset({"avx2", "avx512f", "avx512_bf16"}))
FAKE_AMX_CPU = Capabilities(cpu_flags=frozenset({"avx2", "avx512f", "amx_bf16", "amx_tile"}))
FAKE_AVX2_CPU = Capabilities(cpu_flags=frozenset({"avx2", "fma"}))
FAKE_AVX512_NO_BF16_CPU = Capabilities(cpu_flags=frozenset({"avx2", "avx512f", "avx512_vnni"}))
FAKE_BF16_CPU_CAPPED = Capabilities(cpu_flags=FAKE_BF16_CPU.cpu_flags, onednn_isa_cap="AVX2")
FAKE_BF16_CPU_CAP_KEEPS = Capabilities(
    cpu_flags=FAKE_BF16_CPU.cpu_flags, onednn_isa_cap="avx512_core_bf16"
)
FAKE_ARM_CPU = Capabilities(cpu_flags=frozenset({"bf16", "sve"}), machine="aarch64")


def _fake_gpu(major: int, minor: int, name: str) -> Capabilities:
    return Capabilities(cuda_capability=(major, minor), cuda_name=f"fake {name}")


@pytest.mark.parametrize(
    ("backend", "device", "caps", "providers", "expected", "why"),
    [
        ("torch", "cpu", FAKE_BF16_CPU, None, "bf16", "avx512_bf16"),
        ("torch", "cpu", FAKE_AMX_CPU, None, "bf16", "amx_bf16"),
        ("torch", "cpu", FAKE_AVX2_CPU, None, "fp32", "no native bf16"),
        ("torch", "cpu", FAKE_AVX512_NO_BF16_CPU, None, "fp32", "no native bf16"),
        ("torch", "cpu", FAKE_BF16_CPU_CAPPED, None, "fp32", "ONEDNN_MAX_CPU_ISA=AVX2"),
        ("torch", "cpu", FAKE_BF16_CPU_CAP_KEEPS, None, "bf16", "avx512_bf16"),
        ("torch", "cpu", FAKE_ARM_CPU, None, "fp32", "aarch64"),
        ("torch", "cuda", _fake_gpu(9, 0, "H100"), None, "fp16", "tensor cores"),
        ("torch", "cuda", _fake_gpu(8, 7, "Orin"), None, "fp16", "tensor cores"),
        ("torch", "cuda", _fake_gpu(7, 0, "V100"), None, "fp16", "tensor cores"),
        ("torch", "cuda", _fake_gpu(6, 2, "TX2"), None, "fp16", "double-rate"),
        ("torch", "cuda", _fake_gpu(5, 3, "Nano"), None, "fp16", "double-rate"),
        ("torch", "cuda", _fake_gpu(6, 1, "GTX 1080"), None, "fp32", "fp16 is slow"),
        ("onnxruntime", "cpu", FAKE_BF16_CPU, None, "fp32", "exported fp32 graph"),
        ("onnxruntime", "cuda", _fake_gpu(8, 6, "A10"), ["cuda", "cpu"], "fp32", "fp32 graph"),
        ("onnxruntime", "cuda", _fake_gpu(8, 6, "A10"), ["tensorrt", "cuda"], "fp16", "TensorRT"),
        ("classic_gff", "cpu", FAKE_BF16_CPU, None, "fp32", "fp32 only"),
    ],
)
def test_auto_rule(backend, device, caps, providers, expected, why):
    precision, reason = choose_precision(backend, device, caps, providers)
    assert precision == expected
    assert why in reason and reason.startswith("auto:") and "\n" not in reason


@pytest.mark.parametrize(
    ("device", "caps", "precision", "compile", "installed", "network", "expected", "why"),
    [
        ("cpu", FAKE_BF16_CPU, "auto", False, True, "gifnet", "torch", "bf16 runs fastest in"),
        ("cpu", FAKE_AMX_CPU, "auto", False, True, "tim", "torch", "bf16 runs fastest in"),
        ("cpu", FAKE_BF16_CPU_CAP_KEEPS, "auto", False, True, "gifnet", "torch", "bf16 runs"),
        ("cpu", FAKE_AVX2_CPU, "auto", False, True, "gifnet", "torch", "fastest in PyTorch"),
        ("cpu", FAKE_AVX512_NO_BF16_CPU, "auto", False, True, "gifnet", "torch", "GIFNet's"),
        ("cpu", FAKE_BF16_CPU_CAPPED, "auto", False, True, "gifnet", "torch", "GIFNet's fp32"),
        ("cpu", FAKE_AVX2_CPU, "auto", False, True, "tim", "onnxruntime", "less memory"),
        ("cpu", FAKE_BF16_CPU_CAPPED, "auto", False, True, "tim_light", "onnxruntime", "TIM's"),
        ("cpu", FAKE_AVX2_CPU, "auto", False, False, "tim", "torch", "not installed"),
        ("cpu", FAKE_AVX2_CPU, "fp32", False, True, "tim", "torch", "explicit precision"),
        ("cpu", FAKE_AVX2_CPU, "bf16", False, True, "gifnet", "torch", "explicit precision"),
        ("cpu", FAKE_AVX2_CPU, "auto", True, True, "tim", "torch", "compile runs in PyTorch"),
        ("cpu", FAKE_ARM_CPU, "auto", False, True, "tim", "torch", "aarch64"),
        ("cuda", _fake_gpu(8, 6, "A10"), "auto", False, True, "tim", "torch", "CUDA"),
        ("cuda", _fake_gpu(6, 1, "GTX 1080"), "auto", False, True, "gifnet", "torch", "CUDA"),
    ],
)
def test_auto_backend_rule(device, caps, precision, compile, installed, network, expected, why):
    """backend auto: on an x86 CPU where automatic precision would run the network in fp32,
    GIFNet in PyTorch (its faster fp32 path, in less memory) and TIM in ONNX Runtime where
    installed (as fast, in less memory); torch elsewhere, and for an explicit precision (fp32
    is the exact mode, in PyTorch)."""
    backend, reason = choose_backend(device, caps, precision, compile, installed, network)
    assert backend == expected
    assert why in reason and reason.startswith("auto:") and "\n" not in reason


def test_probe_reads_this_machine(monkeypatch):
    """The probe's CPU flags are /proc/cpuinfo's, read here independently, and the oneDNN cap
    is the environment's."""
    flags = set()
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    caps = probe(torch.device("cpu"))
    assert caps.cpu_flags == flags and caps.onednn_isa_cap == "AVX2"
    assert caps.cuda_capability is None


FAKE_AMX_CPU_CAPPED_BF16 = Capabilities(
    cpu_flags=FAKE_AMX_CPU.cpu_flags | {"avx512_bf16"}, onednn_isa_cap="AVX512_CORE_BF16"
)
FAKE_AMX_CPU_CAPPED_512 = Capabilities(
    cpu_flags=FAKE_AMX_CPU.cpu_flags, onednn_isa_cap="avx512_core"
)
FAKE_OLD_CPU = Capabilities(cpu_flags=frozenset({"sse4_1", "sse4_2"}))
FLAG_NAMES = (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX-512 BF16"))
FLAG_NAMES += (("amx_bf16", "AMX"),)


@pytest.mark.parametrize(
    ("caps", "device", "backend", "precision", "expected"),
    [
        # AMX and AVX-512 BF16 compute bf16 products only; fp32 runs on the vector units.
        (FAKE_AMX_CPU, "cpu", "torch", "bf16", "AMX"),
        (FAKE_AMX_CPU, "cpu", "torch", "fp32", "AVX-512"),
        (FAKE_AMX_CPU, "cpu", "onnxruntime", "fp32", "AVX-512"),
        (FAKE_AMX_CPU, "cpu", "classic_gff", "fp32", "AVX-512"),
        (FAKE_AMX_CPU_CAPPED_BF16, "cpu", "torch", "bf16", "AVX-512 BF16"),
        (FAKE_AMX_CPU_CAPPED_512, "cpu", "torch", "bf16", "AVX-512"),
        (FAKE_BF16_CPU, "cpu", "torch", "bf16", "AVX-512 BF16"),
        (FAKE_BF16_CPU, "cpu", "torch", "fp32", "AVX-512"),
        # The oneDNN cap is PyTorch's: ONNX Runtime's own kernels do not read it.
        (FAKE_BF16_CPU_CAPPED, "cpu", "torch", "bf16", "AVX2"),
        (FAKE_BF16_CPU_CAPPED, "cpu", "onnxruntime", "fp32", "AVX-512"),
        (FAKE_AVX512_NO_BF16_CPU, "cpu", "torch", "bf16", "AVX-512"),
        (FAKE_AVX2_CPU, "cpu", "torch", "bf16", "AVX2"),
        (FAKE_AVX2_CPU, "cpu", "onnxruntime", "fp32", "AVX2"),
        (FAKE_OLD_CPU, "cpu", "torch", "fp32", "SSE4.1"),
        (FAKE_ARM_CPU, "cpu", "torch", "fp32", "aarch64"),
        (_fake_gpu(9, 0, "H100"), "cuda", "torch", "fp16", "CUDA compute capability 9.0"),
    ],
)
def test_instruction_set_rule(caps, device, backend, precision, expected):
    assert instruction_set(caps, device, backend, precision) == expected


def test_engine_reports_its_choice(weights_path):
    exact = FusionEngine(weights_path, "cpu", precision="fp32")
    assert (exact.precision, exact.precision_reason) == ("fp32", "requested")
    auto = FusionEngine(weights_path, "cpu")
    caps = probe(torch.device("cpu"))
    backend = choose_backend("cpu", caps, "auto", False, True)
    assert (auto.backend, auto.backend_reason) == backend
    expected = choose_precision(auto.backend, "cpu", caps)
    assert (auto.precision, auto.precision_reason) == expected
    assert backend[1] in auto.describe() and expected[1] in auto.describe()
    # This machine's instruction set, named from /proc/cpuinfo's flags by the widest one the
    # engine's precision can use (bf16 products on AMX or AVX-512 BF16, else vector units).
    flags = probe(torch.device("cpu")).cpu_flags
    widest = [name for flag, name in FLAG_NAMES if flag in flags]
    if auto.precision != "bf16":
        widest = [name for name in widest if name in ("AVX2", "AVX-512")]
    assert auto.instruction_set == (widest[-1] if widest else "SSE4.1")
    assert auto.describe().endswith(f"; instruction set {auto.instruction_set}")


def test_auto_runs_gifnet_in_torch_fp32_where_the_cpu_lacks_bf16(weights_path, monkeypatch):
    """With oneDNN capped to AVX2 (what a CPU without native bf16 offers) the default engine
    runs GIFNet in PyTorch in fp32, its faster fp32 path there, and says why."""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    engine = FusionEngine(weights_path, "cpu")
    assert (engine.backend, engine.precision) == ("torch", "fp32")
    assert engine.backend_reason == "auto: GIFNet's fp32 runs fastest in PyTorch, in less memory"
    assert engine.backend_reason in engine.describe()


def test_auto_fits_every_backend_where_explicit_precisions_may_not():
    rule = FusionEngine(backend="classic_max", precision="auto")
    assert rule.precision == "fp32"
    with pytest.raises(ValueError, match="fp32 only"):
        FusionEngine(backend="classic_max", precision="bf16")


def _reference_inputs(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    pair = []
    for which in ("a", "b"):
        image = cv2.imread(str(REFERENCE / f"{name}_{which}.png"), cv2.IMREAD_UNCHANGED)
        pair.append(torch.from_numpy(image).float()[None, None] / 255.0)
    return pair[0], pair[1]


def _psnr_float(out: np.ndarray, expected: np.ndarray) -> float:
    mse = float(np.mean((out.astype(np.float64) - expected) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def model(weights_path):
    return load_model(weights_path, "cpu")


@pytest.mark.parametrize("name", REFERENCE_CASES)
def test_auto_on_this_machine_against_the_authors(weights_path, name):
    """What auto runs here (bf16 on a CPU with native bf16, else fp32) stays within 45 dB of
    the authors' float outputs on every reference case."""
    engine = FusionEngine(weights_path, "cpu", mode="grey")
    first, second = _reference_inputs(name)
    out = engine.run_model(first, second)[0, 0].numpy() * 255.0
    expected = np.load(REFERENCE / f"{name}_y.npy")
    db = _psnr_float(out, expected)
    print(f"{name}: {engine.precision} vs authors {db:.1f} dB")
    assert np.isfinite(out).all() and db >= 45.0


@pytest.mark.parametrize("name", ["Medical", "RS_FLIR_00548"])
def test_fp16_numerics(model, name):
    """fp16, auto's choice on CUDA, run on the CPU under float16 autocast (slow, but the same
    arithmetic a GPU does in fp16): no overflow to inf or NaN and ≥ 45 dB against the authors,
    so the GPU default is not a blind choice."""
    first, second = _reference_inputs(name)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.float16):
        out = model(first, second)
    assert out.dtype == torch.float32  # the output stays float32, the work was float16
    out = out[0, 0].numpy() * 255.0
    db = _psnr_float(out, np.load(REFERENCE / f"{name}_y.npy"))
    print(f"{name}: fp16 vs authors {db:.1f} dB")
    assert np.isfinite(out).all() and db >= 45.0
