"""Live tensor memory through one forward of the engine's network; prints the peak and what
is alive at it.

    .venv/bin/python benchmarks/live_tensors.py                    # GIFNet, 640x480, fp32
    .venv/bin/python benchmarks/live_tensors.py --size 640x512 --network tim

Resident memory (memory.py) is the live tensors plus what the allocator keeps and how it
has cut its heap, which varies from run to run; the live tensors are exact and the same in
every run, so they show what a change to the network's order of work saves. Every tensor an
operator creates is followed (a TorchDispatchMode) until its storage is freed; storages
under 1 MiB are left out. The rows at the peak name the line of gifnet_ros that made each.
"""

from __future__ import annotations

import argparse
import traceback
import weakref
from collections.abc import Callable
from pathlib import Path

import torch
from memory import WEIGHTS
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import gifnet_ros
from gifnet_ros.fusion.engine import FusionEngine
from gifnet_ros.models.onnx import NETWORKS
from gifnet_ros.tools.arg_types import width_height

PACKAGE = str(Path(gifnet_ros.__file__).parent)
SMALLEST = 1 << 20  # bytes: smaller storages are left out


def _made_at() -> str:
    """The innermost line of the package on the stack: where a tensor was made."""
    for frame in reversed(traceback.extract_stack()):
        if frame.filename.startswith(PACKAGE):
            return f"{Path(frame.filename).name}:{frame.lineno} {frame.line}"
    return "?"


class LiveTensors(TorchDispatchMode):
    """Bytes of the storages operators create and that are still alive; the peak and the
    storages alive at it."""

    def __init__(self) -> None:
        super().__init__()
        self.alive: dict[int, tuple[int, str]] = {}
        self.now = self.peak = 0
        self.at_peak: list[tuple[int, str]] = []

    def __torch_dispatch__(
        self,
        func: Callable[..., object],
        types: tuple[type, ...],
        args: tuple[object, ...] = (),
        kwargs: dict[str, object] | None = None,
    ) -> object:
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if key in self.alive or size < SMALLEST:
                continue  # a view or an in-place result of a storage already followed
            self.alive[key] = (size, f"{func}  {_made_at()}")
            self.now += size
            weakref.finalize(storage, self._freed, key)
            if self.now > self.peak:
                self.peak, self.at_peak = self.now, sorted(self.alive.values(), reverse=True)
        return out

    def _freed(self, key: int) -> None:
        size, _ = self.alive.pop(key)
        self.now -= size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=width_height, default=(640, 480), metavar="WxH")
    p.add_argument("--network", choices=NETWORKS, default="gifnet")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--weights", type=Path, default=WEIGHTS)
    args = p.parse_args()
    engine = FusionEngine(
        args.weights if args.network == "gifnet" else None,
        device="cpu",
        precision=args.precision,
        backend="torch",
        network=args.network,
    )
    width, height = args.size
    first, second = torch.rand(1, 1, height, width), torch.rand(1, 1, height, width)
    engine.run_model(first, second)  # caches made on the first pair (window indices) stay out
    tracer = LiveTensors()
    with tracer:
        engine.run_model(first, second)
    print(f"# {engine.describe()}")
    print(f"{args.network} {width}x{height}: live tensors peak at {tracer.peak / 2**20:.0f} MiB")
    print("  MiB  made by")
    for size, made in tracer.at_peak:
        print(f"{size / 2**20:5.1f}  {made}")


if __name__ == "__main__":
    main()
