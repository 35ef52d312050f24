"""The process-wide settings a fusion engine makes, in one place.

PyTorch keeps its thread count and its TF32 switches per process, and malloc's behaviour is the
process's too, so building an engine changes them for everything else in the process (another
engine, the caller's own PyTorch code). They are made here, by the one function the engine
calls before it loads its model, so that a reader finds every such side effect in one place:

- ``threads``: torch.set_num_threads, when the options name a count.
- TF32 off (cuDNN convolutions and CUDA matrix products) for an fp32 engine on CUDA: fp32 is
  the exact mode, and PyTorch lets cuDNN use TF32 products by default (about 1e-3 relative
  error). An engine at another precision leaves the switches as they are.
- Freed memory kept in the process for the next pair (gifnet_ros.fusion.allocator) for the
  PyTorch backend on the CPU, whose activations page-fault in again on every pair otherwise.

None of them is undone when the engine goes away: the settings stay for the process's life.
"""

from __future__ import annotations

import torch

from gifnet_ros.fusion.allocator import retain_freed_memory


def configure_process(
    device: torch.device, backend: str, precision: str, threads: int | None
) -> None:
    """Make the process-wide settings for an engine running ``backend`` at the concrete
    ``precision`` on ``device`` (see the module docstring); ValueError for a bad ``threads``."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    if device.type == "cuda" and precision == "fp32":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    if backend == "torch" and device.type == "cpu":
        retain_freed_memory()
