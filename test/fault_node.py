"""The fusion node with faults on demand, for test_node_faults.py: run as a script.

Real faults (a GPU running out of memory in one forward pass) cannot be provoked on a test
machine without a GPU. This launcher installs a fault injector through the node's one test
hook, :attr:`gifnet_ros.ros.model_loader.ModelLoader.engine_hook`, and runs the node's ``main``;
the node's code is otherwise the product's. What to inject comes from the environment:

- ``GIFNET_FAULT_MODEL_ERROR_ON_PAIRS``: comma-separated forward-pass numbers (1 = the first
  pair the node fuses) on which the model raises ``RuntimeError('CUDA out of memory ...')``;
- ``GIFNET_FAULT_FAKE_CUDA=1``: the model loaded at start reports a (fake) CUDA device, so
  ``fallback_to_cpu`` moves it to the CPU; models loaded later are the real CPU ones.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from gifnet_ros.ros import node
from gifnet_ros.ros.model_loader import ModelLoader

MODEL_ERROR_ENV = "GIFNET_FAULT_MODEL_ERROR_ON_PAIRS"
FAKE_CUDA_ENV = "GIFNET_FAULT_FAKE_CUDA"


class FakeCudaDevice:
    """Stands for ``torch.device('cuda')`` where there is none; says what it is when printed."""

    type = "cuda"

    def __str__(self) -> str:
        return "cuda (fake cuda: fault injector)"


class FaultInjector:
    """Counts forward passes over every engine the node builds and fails the chosen ones."""

    def __init__(self, environ: dict[str, str]) -> None:
        spec = environ.get(MODEL_ERROR_ENV, "")
        self.fail_on = {int(n) for n in spec.split(",") if n.strip()}
        self.fake_cuda = environ.get(FAKE_CUDA_ENV, "") == "1"
        self.forward_passes = 0

    def wrap(self, engine: Any) -> Any:
        """The node's engine hook: the first engine may pose as CUDA; all count passes."""
        wrapped = FaultyEngine(engine, self, self.fake_cuda)
        self.fake_cuda = False
        return wrapped

    def before_forward(self) -> None:
        self.forward_passes += 1
        if self.forward_passes in self.fail_on:
            raise RuntimeError(
                f"CUDA out of memory (fault injected by {MODEL_ERROR_ENV} "
                f"on forward pass {self.forward_passes})"
            )


class FaultyEngine:
    """A FusionEngine as the node sees it, with the injector's faults; all else passes through."""

    def __init__(self, engine: Any, injector: FaultInjector, fake_cuda: bool) -> None:
        object.__setattr__(self, "_engine", engine)
        object.__setattr__(self, "_injector", injector)
        object.__setattr__(self, "device", FakeCudaDevice() if fake_cuda else engine.device)

    def fuse_luminance(self, first: Any, second: Any) -> Any:
        self._injector.before_forward()
        return self._engine.fuse_luminance(first, second)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._engine, name, value)  # mode, max_pixels, ... set by the worker per pair


if __name__ == "__main__":
    ModelLoader.engine_hook = FaultInjector(dict(os.environ)).wrap
    sys.exit(node.main())
