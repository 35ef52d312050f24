"""The fusion node's model: build the engine the parameters ask for, swap it in between pairs.

Model reloads (``backend``, ``device``, ``precision``, ``weights`` and the other engine
options, :data:`~gifnet_ros.ros.params.ENGINE_KEYS`) are built on a loader thread and handed
to the worker, which takes the new engine before its next pair; fusion continues with the old
model meanwhile and keeps it if the new one fails to load. ``fallback_to_cpu`` replaces a
failing accelerator model with a CPU one the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar

from gifnet_ros.fusion.engine import CLASSIC_BACKENDS, FusionEngine
from gifnet_ros.fusion.errors import one_line
from gifnet_ros.fusion.options import EngineOptions
from gifnet_ros.models.onnx import split_providers
from gifnet_ros.ros.stats import FusionStats

EngineKey = dict[str, Any]
"""Engine parameter name -> value (the names are gifnet_ros.ros.params.ENGINE_KEYS)."""


def precision_text(engine: Any) -> str:
    """The precision an engine runs at and why, e.g. ``bf16 (auto: the CPU computes ...)``."""
    return f"{engine.precision} ({engine.precision_reason})"


def describe(key: EngineKey, engine: Any) -> str:
    """An engine for the log: backend, device, precision (and why), the model file and the
    instruction set its products run on."""
    if key["backend"] in CLASSIC_BACKENDS:
        return f"{key['backend']}, device {engine.device}, no weights"
    model = key["onnx_model"] if engine.backend == "onnxruntime" else ""
    if key["network"] == "gifnet":
        source, network = model or key["weights"] or "default weights", ""
    else:
        source = key["tim_weights"] or "this project's TIM weights (not the authors')"
        network = f"{key['network']} (TIM), "
    where = f"{engine.backend_text()}, device {engine.device}"
    isa = f"instruction set {engine.instruction_set}"
    return f"{network}{where}, {precision_text(engine)}, {source}; {isa}"


def options_from_parameters(key: EngineKey) -> EngineOptions:
    """The engine options of the node's engine parameters. Thermal normalisation is not among
    them: the node applies it before alignment. Nor are the mode and the reduced-size options,
    which the worker sets per pair."""
    weights = key["weights"] if key["network"] == "gifnet" else key["tim_weights"]
    return EngineOptions(
        network=key["network"],
        weights=weights or None,
        device=key["device"],
        precision=key["precision"],
        backend=key["backend"],
        onnx_model=key["onnx_model"] or None,
        providers=split_providers(key["onnx_providers"]) or None,
        threads=key["threads"] or None,
        compile=key["compile"],
    )


class ModelLoader:
    """Owns the engine in use and builds the one the parameters ask for on its own thread.

    The executor thread :meth:`request` s a key; the loader thread builds it; the worker
    :meth:`take` s the newest engine before each pair. A failed build keeps the old engine,
    counts ``reload_failures`` and calls ``on_reverted`` so the node can show the parameters of
    the model still in use.
    """

    engine_hook: ClassVar[Callable[[FusionEngine], Any] | None] = None
    """Tests only: called with every engine built and returns the engine to use instead.

    None in the product. ``test/fault_node.py`` sets it to wrap engines with the faults a test
    machine cannot produce (a CUDA device running out of memory)."""

    def __init__(
        self,
        key: EngineKey,
        mode: Callable[[], str],
        stats: FusionStats,
        logger: Any,
        on_reverted: Callable[[], None],
    ) -> None:
        self._mode = mode
        self._stats = stats
        self._logger = logger
        self._on_reverted = on_reverted
        self.key = key  # of the engine in use (or about to be taken by the worker)
        self.engine = self.build(key)
        self._desired = key
        self._pending: Any = None
        self._cv = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="gifnet-loader", daemon=True)

    def build(self, key: EngineKey) -> Any:
        """A new engine for ``key``; raises whatever loading raises (missing weights, ...)."""
        engine = FusionEngine(options_from_parameters(key), mode=self._mode())
        hook = ModelLoader.engine_hook
        return engine if hook is None else hook(engine)

    def newest(self) -> Any:
        """The engine of :attr:`key`: the loaded one if the worker has not taken it yet."""
        with self._cv:
            return self._pending or self.engine

    def describe(self) -> str:
        """The engine of :attr:`key` for the log (the loaded one, if not yet taken)."""
        with self._cv:  # a reentrant lock: key and engine read together
            return describe(self.key, self.newest())

    def start(self) -> None:
        self._thread.start()

    def request(self, key: EngineKey) -> None:
        """Ask for the engine of ``key`` (executor thread); built in the background."""
        with self._cv:
            self._desired = key
            self._cv.notify()

    def take(self) -> Any:
        """The engine for the next pair (worker thread): a newly loaded one if there is one."""
        with self._cv:
            if self._pending is not None:
                self.engine, self._pending = self._pending, None
            return self.engine

    def replace(self, engine: Any, key: EngineKey) -> None:
        """Use ``engine`` from the next pair on, and forget any reload asked for before."""
        with self._cv:
            self.engine, self._pending = engine, None
            self.key = self._desired = key

    def close(self, timeout: float) -> bool:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def release(self) -> Any:
        """Drop every reference to the engines (the threads are stopped); returns its device."""
        device = self.engine.device
        self.engine = self._pending = None
        return device

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._desired == self.key and not self._stopping:
                    self._cv.wait()
                if self._stopping:
                    return
                key = self._desired
            try:
                engine = self.build(key)
            except Exception as exc:  # any load failure must leave the old model running
                with self._stats.lock:
                    self._stats.reload_failures += 1
                self._logger.error(
                    f"model reload failed ({one_line(exc)}); keeping {self.describe()}"
                )
                with self._cv:
                    if self._desired == key:  # not superseded by a newer request
                        self._desired = self.key
                        self._on_reverted()
                continue
            with self._cv:
                if self._desired != key:
                    continue  # asked for something else meanwhile: build that instead
                self._pending, self.key = engine, key
            with self._stats.lock:
                self._stats.reloads += 1
            self._logger.info(f"model reloaded: {describe(key, engine)}")
