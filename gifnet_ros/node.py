"""The live fusion node: synchronized thermal + RGB images in, one fused image out.

This is a thin ROS layer over the package's ROS-free parts: ``conversion`` turns messages into
arrays, ``align`` puts the thermal image on the RGB grid, ``thermal`` brings radiometric data to
8 bits, ``engine`` runs GIFNet, and ``pairing`` pairs messages when ``message_filters`` is not
installed.

Threading (the lesson of image_pipeline's nodes): the network takes from tens of milliseconds
(GPU, small images) to many seconds (CPU, VGA), so inference never runs in a DDS callback. The
synchronizer callback only puts the newest pair into a one-slot mailbox and wakes a worker
thread; a pair that is replaced before the worker took it is dropped and counted. Nothing queues
without bound: the only queues are the synchronizer's (``sync.queue_size`` per input) and the
mailbox (one pair), so a slow model shows up as counted drops and never as growing latency or
memory. Model reloads (``backend``, ``device``, ``precision``, ``weights`` and the other
engine options) are built on a loader thread and
swapped in by the worker between pairs, so fusion continues with the old model meanwhile and
keeps it if the new one fails to load.

Failures stay local: a bad message, a pair of mismatched sizes or a model error (CUDA out of
memory) skips that pair with a throttled one-line log and a counter in the diagnostics; with
``fallback_to_cpu`` a model failure on a GPU moves the model to the CPU. A clock jumping back
(a bag replayed in a loop with ``use_sim_time``) resets the synchronizer and the mailbox.

``FusionLifecycleNode`` (``--lifecycle``, console script ``lifecycle_main``) is the same node
as a managed node: the model is loaded on configure and freed on cleanup, pairs are fused only
while active.

Run ``gifnet-fusion-node --help`` for the parameters; ``config/fusion.yaml`` documents each.
"""

from __future__ import annotations

import argparse
import array
import gc
import math
import os
import sys
import textwrap
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.clock import JumpThreshold
from rclpy.duration import Duration
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import CompressedImage, Image

from gifnet_ros.align import IDENTITY, NO_CROP, Alignment, AlignmentError, thermal_for_fusion
from gifnet_ros.align import METHODS as ALIGN_METHODS
from gifnet_ros.conversion import (
    ImageConversionError,
    array_to_image_fields,
    compressed_to_array,
    fused_pixels,
    image_to_array,
)
from gifnet_ros.engine import (
    BACKENDS,
    CLASSIC_BACKENDS,
    PRECISIONS,
    RESTORE_RULES,
    FusionEngine,
    check_options,
)
from gifnet_ros.export import PROVIDERS, split_providers
from gifnet_ros.pairing import StampPairer, stamp_to_ns
from gifnet_ros.thermal import RULES as THERMAL_RULES
from gifnet_ros.weights import WeightsError, resolve_weights

NODE_NAME = "fusion_node"
THERMAL_TOPIC = "thermal/image"
RGB_TOPIC = "rgb/image"
FUSED_TOPIC = "fused/image"
LUMINANCE_TOPIC = "fused/luminance"
DIAGNOSTICS_TOPIC = "/diagnostics"  # absolute, like diagnostic_updater: the aggregator's input

OUTPUT_ENCODINGS = ("rgb8", "bgr8", "mono8")
TRANSPORTS = ("", "raw", "compressed")
SYNC_BACKENDS = ("auto", "message_filters", "builtin")
_ENGINE_KEYS = (
    "weights",
    "device",
    "precision",
    "backend",
    "onnx_model",
    "onnx_providers",
    "threads",
    "compile",
)
"""Parameters that need a new engine (a reload); an engine key maps each to its value."""

ERROR_LOG_INTERVAL = 5.0
"""Seconds between two log lines for the same error reason; every error is still counted."""
CLOCK_JUMP_BACK = 1.0
"""Seconds the node clock must jump back before the synchronizer and mailbox are reset."""
LATENCY_WINDOW = 100
"""Fused pairs over which the latency and model-time statistics are taken."""


@dataclass(frozen=True)
class _Spec:
    """One parameter: default (which fixes its type), documentation and constraints."""

    name: str
    default: Any
    description: str
    constraints: str = ""
    read_only: bool = False
    float_range: tuple[float, float] | None = None
    int_range: tuple[int, int] | None = None

    def descriptor(self) -> ParameterDescriptor:
        descriptor = ParameterDescriptor(
            name=self.name,
            description=self.description,
            additional_constraints=self.constraints,
            read_only=self.read_only,
        )
        if self.float_range is not None:
            low, high = self.float_range
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=low, to_value=high, step=0.0)
            ]
        if self.int_range is not None:
            low, high = self.int_range
            descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=1)]
        return descriptor


def _one_of(choices: Sequence[str]) -> str:
    return "one of: " + ", ".join(repr(c) if c == "" else c for c in choices)


PARAMETERS: tuple[_Spec, ...] = (
    _Spec(
        "mode",
        "thermal_rgb",
        "Fusion task of the network; takes effect on the next pair.",
        _one_of(FusionEngine.MODES),
    ),
    _Spec(
        "backend",
        "torch",
        "Inference backend: torch; onnxruntime (an exported graph, the fastest on a CPU: "
        "exported on first use and cached, or onnx_model); or a classical rule that needs no "
        "weights (classic_average, classic_max, classic_laplacian, classic_gff; CPU, fp32, full "
        "size). Changing it reloads the model.",
        _one_of(BACKENDS),
    ),
    _Spec(
        "onnx_model",
        "",
        "ONNX file for backend onnxruntime (written by gifnet-export); empty: the cached "
        "export of the checkpoint. Changing it reloads the model.",
        "an existing .onnx file, or empty",
    ),
    _Spec(
        "onnx_providers",
        "",
        "ONNX Runtime execution providers in order of preference, comma-separated (cpu, cuda, "
        "tensorrt); empty: cuda,cpu on a CUDA device, else cpu. Changing it reloads the model.",
        "comma-separated names out of " + ", ".join(PROVIDERS),
    ),
    _Spec(
        "device",
        "auto",
        "Torch device; 'auto' picks cuda when available. Changing it "
        "reloads the model in the background.",
        "auto, cpu, cuda or cuda:N",
    ),
    _Spec(
        "precision",
        "fp32",
        "Inference precision; changing it reloads the model.",
        _one_of(PRECISIONS),
    ),
    _Spec(
        "weights",
        "",
        "Checkpoint path; empty: $GIFNET_WEIGHTS, then the gifnet-weights "
        "cache. Changing it reloads the model.",
        "an existing file, or empty",
    ),
    _Spec(
        "threads",
        0,
        "CPU threads for inference (torch and onnxruntime); 0: the library's default. "
        "Changing it reloads the model.",
        int_range=(0, 1024),
    ),
    _Spec(
        "compile",
        False,
        "torch.compile the network (torch backend only; compiled once per image size, CUDA "
        "graphs on CUDA). Changing it reloads the model.",
    ),
    _Spec(
        "max_pixels",
        0,
        "Fuse the luminance at most at this many pixels and restore full size (CPU-only "
        "robots); 0: no limit. Takes effect on the next pair.",
        "0, or at least 64 (8x8)",
        int_range=(0, 1 << 30),
    ),
    _Spec(
        "inference_scale",
        1.0,
        "Fuse at this fraction of the image side and restore full size; 1: full size. "
        "Takes effect on the next pair.",
        "0 < scale <= 1",
        float_range=(0.0, 1.0),
    ),
    _Spec(
        "restore",
        "detail",
        "How a reduced-size fusion returns to full size: detail (upsample and add back the "
        "inputs' fine detail) or bilinear (upsample only).",
        _one_of(RESTORE_RULES),
    ),
    _Spec(
        "thermal.normalization",
        "percentile",
        "How a 16-bit or float thermal image is "
        "mapped to 8 bits (8-bit images are used as they are).",
        _one_of(THERMAL_RULES),
    ),
    _Spec(
        "thermal.percentiles",
        [1.0, 99.0],
        "Low and high percentile of the per-frame stretch for normalization 'percentile'.",
        "[low, high], 0 <= low < high <= 100",
    ),
    _Spec(
        "thermal.range",
        [0.0, 65535.0],
        "Input values mapped to 0 and 255 for "
        "normalization 'fixed' (raw counts, kelvin or degrees, as the camera sends).",
        "[min, max], finite, max > min",
    ),
    _Spec(
        "align.method",
        "resize",
        "How the thermal image is put on the RGB pixel grid: "
        "resize to the RGB size, warp by align.homography, or none (sizes must match).",
        _one_of(ALIGN_METHODS),
    ),
    _Spec(
        "align.homography",
        list(IDENTITY),
        "3x3 matrix, row-major, mapping (cropped) "
        "thermal pixel coordinates to RGB pixel coordinates; used by align.method "
        "homography.",
        "9 finite numbers, non-singular",
    ),
    _Spec(
        "align.crop",
        list(NO_CROP),
        "Region [x, y, w, h] cut from the thermal image before alignment; [0, 0, 0, 0] = no crop.",
        "4 integers >= 0, w and h both > 0 or both 0",
    ),
    _Spec(
        "fallback_to_cpu",
        True,
        "When the model raises a RuntimeError (CUDA out of memory, a lost device) on an "
        "accelerator, load it on the CPU and keep fusing there (slower, but the node stays "
        "useful); the pair that failed is skipped either way.",
    ),
    _Spec(
        "output_encoding",
        "rgb8",
        "Encoding of fused/image; mono8 publishes the fused luminance.",
        _one_of(OUTPUT_ENCODINGS),
    ),
    _Spec(
        "publish_luminance", False, "Also publish the fused luminance (mono8) on fused/luminance."
    ),
    _Spec(
        "max_age",
        0.0,
        "Drop a pair whose RGB stamp is more than this many seconds older "
        "than the node clock when the worker takes it; 0 disables.",
        float_range=(0.0, 3600.0),
    ),
    _Spec(
        "sync.slop",
        0.05,
        "Largest stamp difference (s) between a thermal and an RGB image that are fused together.",
        "> 0",
        float_range=(0.0, 60.0),
    ),
    _Spec(
        "sync.queue_size",
        10,
        "Messages per input the synchronizer keeps while looking for partners.",
        int_range=(1, 1000),
    ),
    _Spec(
        "sync.backend",
        "auto",
        "Pairing implementation: message_filters' "
        "ApproximateTimeSynchronizer, the package's StampPairer ('builtin'), or 'auto' "
        "(message_filters when importable).",
        _one_of(SYNC_BACKENDS),
        read_only=True,
    ),
    _Spec(
        "compressed",
        False,
        "Subscribe to sensor_msgs/CompressedImage on "
        "<topic>/compressed (image_transport naming) for both inputs.",
        read_only=True,
    ),
    _Spec(
        "thermal_transport",
        "",
        "Per-input override of 'compressed' for the thermal input.",
        _one_of(TRANSPORTS),
        read_only=True,
    ),
    _Spec(
        "rgb_transport",
        "",
        "Per-input override of 'compressed' for the RGB input.",
        _one_of(TRANSPORTS),
        read_only=True,
    ),
    _Spec(
        "qos_depth",
        5,
        "History depth of the sensor-data (best effort) subscriptions and of the publishers.",
        read_only=True,
        int_range=(1, 1000),
    ),
    _Spec(
        "diagnostics_period",
        1.0,
        "Seconds between two DiagnosticArray messages on /diagnostics.",
        "> 0",
        float_range=(0.0, 3600.0),
    ),
    _Spec(
        "summary_period",
        10.0,
        "Seconds between two statistics lines in the log; 0 disables them.",
        float_range=(0.0, 86400.0),
    ),
)
SPECS = {spec.name: spec for spec in PARAMETERS}


FAULT_MODEL_ERROR_ENV = "GIFNET_FAULT_INJECT_MODEL_ERROR_ON_PAIRS"
"""Test-only fault injector: comma-separated forward-pass numbers (1 = the first pair the node
fuses) on which the model is made to raise ``RuntimeError('CUDA out of memory ...')``."""
FAULT_FAKE_CUDA_ENV = "GIFNET_FAULT_INJECT_FAKE_CUDA"
"""Test-only fault injector: ``1`` makes the node treat its CPU model as if it ran on a CUDA
device (a fake CUDA device, for machines without one), so ``fallback_to_cpu`` can be tested."""


LOAD_TEST_STAND_IN_ENV = "GIFNET_LOAD_TEST_STAND_IN_NETWORK"
"""Load testing only: ``1`` replaces GIFNet by :class:`LoadTestStandInNetwork`, so a soak run
measures the node (transport, conversion, threads, memory) at camera rates on a CPU."""


class LoadTestStandInNetwork:
    """NOT GIFNet: a stand-in with FusionEngine's interface for load tests of the node.

    The fused luminance is the mean of the thermal image and the RGB luminance (BT.601), with
    the RGB chroma kept; a few milliseconds at VGA instead of GIFNet's seconds on a CPU. It is
    only ever built when :data:`LOAD_TEST_STAND_IN_ENV` is set, and says so in the log and in
    the diagnostics' ``device``.
    """

    MODES = FusionEngine.MODES

    def __init__(self, mode: str) -> None:
        import torch

        self.mode = mode
        self.device = torch.device("cpu")
        self.last_model_seconds = 0.0

    def fuse_luminance(
        self, first: np.ndarray, second: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        import cv2

        started = time.perf_counter()
        if first.shape[:2] != second.shape[:2]:
            raise ValueError(f"sizes differ: {first.shape[:2]} and {second.shape[:2]}")
        grey = first if first.ndim == 2 else cv2.cvtColor(first, cv2.COLOR_RGB2GRAY)
        if second.ndim == 2:
            luminance, colour = cv2.addWeighted(grey, 0.5, second, 0.5, 0), None
        else:
            ycrcb = cv2.cvtColor(second, cv2.COLOR_RGB2YCrCb)
            ycrcb[..., 0] = cv2.addWeighted(grey, 0.5, ycrcb[..., 0], 0.5, 0)
            luminance, colour = ycrcb[..., 0].copy(), cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB)
        self.last_model_seconds = time.perf_counter() - started
        return luminance, colour


class _FaultInjector:
    """Faults on demand for the robustness tests; inert unless its environment variables are set.

    Real faults (a GPU running out of memory in one forward pass) cannot be provoked on a test
    machine without a GPU, so the tests ask for them through the environment of the node process.
    """

    def __init__(self, environ: dict[str, str]) -> None:
        spec = environ.get(FAULT_MODEL_ERROR_ENV, "")
        self.fail_on = {int(n) for n in spec.split(",") if n.strip()}
        self.fake_cuda = environ.get(FAULT_FAKE_CUDA_ENV, "") == "1"
        self.forward_passes = 0

    def before_forward(self) -> None:
        """Count a forward pass and raise if the injector was asked to fail this one."""
        self.forward_passes += 1
        if self.forward_passes in self.fail_on:
            raise RuntimeError(
                f"CUDA out of memory (fault injected by {FAULT_MODEL_ERROR_ENV} "
                f"on forward pass {self.forward_passes})"
            )


class StartupError(RuntimeError):
    """A configuration that cannot run; the message is one line for the log."""


def _one_line(text: object, limit: int = 400) -> str:
    """Collapse an exception text to one line, so a log line stays one line (torch's are not)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _check_weights(value: str) -> str | None:
    try:
        resolve_weights(value or None)
    except WeightsError as exc:
        return f"weights: {exc}"
    return None


def _check_providers(value: str) -> str | None:
    unknown = [name for name in split_providers(value) if name not in PROVIDERS]
    if unknown:
        return f"onnx_providers: unknown {', '.join(unknown)} (known: {', '.join(PROVIDERS)})"
    return None


def _check_onnx_model(value: str) -> str | None:
    if value and not os.path.isfile(value):
        return f"onnx_model: {value} is not a file (write one with gifnet-export)"
    return None


def _check_max_pixels(value: int) -> str | None:
    return None if value == 0 or value >= 64 else f"max_pixels must be 0 or >= 64, got {value}"


def _needs_weights(values: dict[str, Any]) -> bool:
    """Whether the engine these parameter values ask for loads the checkpoint: not for a
    classical rule, nor for onnxruntime with its own ONNX file."""
    backend = values["backend"]
    return backend == "torch" or (backend == "onnxruntime" and not values["onnx_model"])


def _check_pair(name: str, values: Sequence[float], low: float, high: float) -> str | None:
    if len(values) != 2 or not all(math.isfinite(v) for v in values):
        return f"{name} needs 2 finite numbers, got {list(values)}"
    if not low <= values[0] < values[1] <= high:
        return f"{name} {list(values)} must satisfy {low} <= first < second <= {high}"
    return None


def _choice(name: str, choices: Sequence[str]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"{name} {value!r} is not {_one_of(choices)}"

    return check


def _positive(name: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value > 0 else f"{name} must be > 0, got {value}"

    return check


_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "mode": _choice("mode", FusionEngine.MODES),
    "precision": _choice("precision", PRECISIONS),
    "backend": _choice("backend", BACKENDS),
    "onnx_model": _check_onnx_model,
    "onnx_providers": _check_providers,
    "max_pixels": _check_max_pixels,
    "inference_scale": _positive("inference_scale"),
    "restore": _choice("restore", RESTORE_RULES),
    "thermal.normalization": _choice("thermal.normalization", THERMAL_RULES),
    "thermal.percentiles": lambda v: _check_pair("thermal.percentiles", v, 0.0, 100.0),
    "thermal.range": lambda v: _check_pair("thermal.range", v, -math.inf, math.inf),
    "output_encoding": _choice("output_encoding", OUTPUT_ENCODINGS),
    "sync.slop": _positive("sync.slop"),
    "sync.backend": _choice("sync.backend", SYNC_BACKENDS),
    "thermal_transport": _choice("thermal_transport", TRANSPORTS),
    "rgb_transport": _choice("rgb_transport", TRANSPORTS),
    "diagnostics_period": _positive("diagnostics_period"),
}
"""Per-parameter checks beyond the descriptor's type and range; return the rejection reason."""


@dataclass(frozen=True)
class _Settings:
    """What the worker needs per pair; replaced as a whole, so a pair never sees a mix."""

    mode: str
    thermal_rule: str
    percentiles: tuple[float, float]
    value_range: tuple[float, float]
    alignment: Alignment
    output_encoding: str
    publish_luminance: bool
    max_age: float
    max_pixels: int | None
    inference_scale: float
    restore: str

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> _Settings:
        return cls(
            mode=values["mode"],
            thermal_rule=values["thermal.normalization"],
            percentiles=tuple(values["thermal.percentiles"]),
            value_range=tuple(values["thermal.range"]),
            alignment=Alignment.create(
                values["align.method"], values["align.homography"], values["align.crop"]
            ),
            output_encoding=values["output_encoding"],
            publish_luminance=values["publish_luminance"],
            max_age=values["max_age"],
            max_pixels=values["max_pixels"] or None,
            inference_scale=values["inference_scale"],
            restore=values["restore"],
        )


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else math.nan


class _Stats:
    """Counters and recent timings, shared by the DDS callbacks, the worker and the timer."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.thermal_in = 0
        self.rgb_in = 0
        self.pairs = 0
        self.fused = 0
        self.drops: dict[str, int] = {"replaced": 0, "stale": 0}
        self.errors: dict[str, int] = {}
        self.last_error = ""
        self.reloads = 0
        self.reload_failures = 0
        self.fallbacks = 0
        self.clock_jumps = 0
        self.latency: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.model: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.model_total = 0.0
        self.last_model = math.nan
        self.last_processing = math.nan

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "thermal_in": self.thermal_in,
                "rgb_in": self.rgb_in,
                "pairs": self.pairs,
                "fused": self.fused,
                "drops": dict(self.drops),
                "errors": dict(self.errors),
                "last_error": self.last_error,
                "reloads": self.reloads,
                "reload_failures": self.reload_failures,
                "fallbacks": self.fallbacks,
                "clock_jumps": self.clock_jumps,
                "latency": list(self.latency),
                "model": list(self.model),
                "model_total": self.model_total,
                "last_model": self.last_model,
                "last_processing": self.last_processing,
            }


class _FusionCore:
    """The fusion node's logic, shared by the plain node and the managed (lifecycle) one.

    A mixin over ``rclpy.node.Node``: ``_declare`` sets up the parameters (construction time),
    ``_bring_up`` loads the model and creates inputs, outputs and threads, ``_tear_down`` undoes
    that. The plain :class:`FusionNode` brings itself up at once; :class:`FusionLifecycleNode`
    does it on configure and tears down on cleanup.
    """

    def _declare(self) -> None:
        self._stats = _Stats()
        self._started = False
        self._active = threading.Event()  # pairs are fused only while set (lifecycle: active)
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None
        self._loader: threading.Thread | None = None
        self._values: dict[str, Any] = {spec.name: spec.default for spec in PARAMETERS}
        # Registered before declaring, so values from a params file or the command line go
        # through the same checks as run-time changes and a bad one stops the node at start.
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._declaring = True  # whether weights are needed is known once backend is declared
        for spec in PARAMETERS:
            self._values[spec.name] = self.declare_parameter(
                spec.name, spec.default, spec.descriptor()
            ).value
        self._declaring = False
        if _needs_weights(self._values):
            reason = _check_weights(self._values["weights"])
            if reason:
                raise StartupError(reason)
        self._settings = _Settings.from_values(self._values)

    def _bring_up(self) -> None:
        """Load the model, create publishers, inputs, timer and threads; start fusing."""
        self._stopping = threading.Event()
        self._faults = _FaultInjector(dict(os.environ))
        self._engine_key = self._wanted_engine_key()
        self._desired_key = self._engine_key
        self._engine = self._build_engine(self._engine_key)
        self._pending_engine: FusionEngine | None = None

        depth = self._values["qos_depth"]
        self._fused_pub = self.create_publisher(Image, FUSED_TOPIC, depth)
        self._luminance_pub = None
        self._diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)

        self._cv = threading.Condition()
        self._mailbox: tuple[Any, Any] | None = None
        self._reload_cv = threading.Condition()
        self._error_log: dict[str, tuple[float, int]] = {}
        self._error_log_lock = threading.Lock()
        # A failed reload reverts the parameters on the executor thread (parameter updates
        # are not thread-safe in rclpy); the loader thread only triggers this.
        self._revert_guard = self.create_guard_condition(self._revert_engine_parameters)
        self._worker = threading.Thread(target=self._work, name="gifnet-fusion", daemon=True)
        self._loader = threading.Thread(target=self._load, name="gifnet-loader", daemon=True)

        self._sync: Any = None
        self._pairer: StampPairer | None = None
        self._backend = self._create_inputs(depth)

        self._diag_timer = self.create_timer(
            self._values["diagnostics_period"], self._publish_diagnostics
        )
        # A clock that jumps back (a bag replayed in a loop with use_sim_time, a simulator
        # reset): pairs queued under the old time line must not meet messages of the new one.
        self._jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(
                min_forward=None,
                min_backward=Duration(seconds=-CLOCK_JUMP_BACK),
                on_clock_change=False,
            ),
            post_callback=self._on_clock_jump,
        )
        self._last_diag = (time.monotonic(), self._stats.snapshot())
        self._last_summary = self._last_diag
        self._worker.start()
        self._loader.start()
        self._started = True
        self.get_logger().info(
            f"fusing {self._subs[0].topic_name} + {self._subs[1].topic_name} -> "
            f"{self._fused_pub.topic_name} ({self._describe_engine()}, mode {self._settings.mode}, "
            f"sync {self._backend} slop {self._values['sync.slop']} s)"
        )

    def _tear_down(self) -> bool:
        """Undo ``_bring_up``: stop the threads, destroy inputs and outputs, free the model.

        Returns False if the worker is still inside a forward pass (see ``close``); it keeps
        its own reference to the model until the pass ends.
        """
        finished = self.close()
        self._started = False
        self._jump_handle.unregister()
        self.destroy_timer(self._diag_timer)
        for subscription in self._subs:
            self.destroy_subscription(subscription)
        for publisher in (self._fused_pub, self._luminance_pub, self._diag_pub):
            if publisher is not None:
                self.destroy_publisher(publisher)
        self._luminance_pub = None
        self.destroy_guard_condition(self._revert_guard)
        self._sync = self._pairer = None
        self._mailbox = None
        device = self._engine.device
        self._engine = self._pending_engine = None
        gc.collect()  # the model's tensors, so that the CUDA cache below can be returned
        if device.type == "cuda":
            import torch

            torch.cuda.empty_cache()
        self.get_logger().info(f"model released ({device}); inputs and outputs destroyed")
        return finished

    # ------------------------------------------------------------------ parameters

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Check every change; apply it only if all pass, so a rejection changes nothing."""
        candidate = dict(self._values)
        for parameter in parameters:
            if parameter.name not in SPECS:
                continue  # e.g. use_sim_time, handled by rclpy itself
            value = parameter.value
            if isinstance(value, (array.array, tuple)):
                value = list(value)
            check = _CHECKS.get(parameter.name)
            reason = check(value) if check else None
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            candidate[parameter.name] = value
        changed = {name for name in SPECS if candidate[name] != self._values[name]}
        needs_check = changed & {"weights", "backend", "onnx_model"} and not self._declaring
        if needs_check and _needs_weights(candidate):
            reason = _check_weights(candidate["weights"])
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        try:
            # Backend, device and precision are checked together (fp16 needs CUDA, classical
            # rules run on the CPU) with the engine's own rules, so a reload is only attempted
            # for a combination it accepts.
            check_options(
                candidate["backend"],
                candidate["device"],
                candidate["precision"],
                candidate["compile"],
            )
            settings = _Settings.from_values(candidate)
        except ValueError as exc:  # AlignmentError is a ValueError too
            return SetParametersResult(successful=False, reason=str(exc))
        self._values = candidate
        self._settings = settings  # read by the worker at its next pair
        if self._started:
            self._apply_changes(changed)
        return SetParametersResult(successful=True)

    def _apply_changes(self, changed: set[str]) -> None:
        """Act on accepted changes that need more than the new settings snapshot."""
        if changed & set(_ENGINE_KEYS):
            with self._reload_cv:
                self._desired_key = self._wanted_engine_key()
                self._reload_cv.notify()
        if changed & {"sync.slop", "sync.queue_size"}:
            self._configure_sync()
        if "diagnostics_period" in changed:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(
                self._values["diagnostics_period"], self._publish_diagnostics
            )
        if changed - set(_ENGINE_KEYS):
            self.get_logger().info(
                "parameters changed: "
                + ", ".join(f"{n}={self._values[n]}" for n in sorted(changed))
            )

    def _wanted_engine_key(self) -> dict[str, Any]:
        return {name: self._values[name] for name in _ENGINE_KEYS}

    def _build_engine(self, options: dict[str, Any]) -> FusionEngine:
        # Thermal normalisation is not passed: the node applies it before alignment. The
        # reduced-size options are the worker's to set per pair, like the mode.
        if os.environ.get(LOAD_TEST_STAND_IN_ENV) == "1":
            self.get_logger().warning(
                f"{LOAD_TEST_STAND_IN_ENV}=1: fusing with a load-test stand-in, NOT GIFNet"
            )
            return LoadTestStandInNetwork(self._settings.mode)  # type: ignore[return-value]
        return FusionEngine(
            weights=options["weights"] or None,
            device=options["device"],
            precision=options["precision"],
            mode=self._settings.mode,
            backend=options["backend"],
            onnx_model=options["onnx_model"] or None,
            providers=split_providers(options["onnx_providers"]) or None,
            threads=options["threads"] or None,
            compile=options["compile"],
        )

    @staticmethod
    def _key_text(options: dict[str, Any], device: Any) -> str:
        """An engine key for the log: backend, device, precision and the model file."""
        if options["backend"] in CLASSIC_BACKENDS:
            return f"{options['backend']}, device {device}, no weights"
        model = options["onnx_model"] if options["backend"] == "onnxruntime" else ""
        source = model or options["weights"] or "default weights"
        return f"{options['backend']}, device {device}, {options['precision']}, {source}"

    def _describe_engine(self) -> str:
        return self._key_text(self._engine_key, self._engine.device)

    def _load(self) -> None:
        """Loader thread: build the engine the parameters ask for, off the executor."""
        while True:
            with self._reload_cv:
                while self._desired_key == self._engine_key and not self._stopping.is_set():
                    self._reload_cv.wait()
                if self._stopping.is_set():
                    return
                key = self._desired_key
            try:
                engine = self._build_engine(key)
            except Exception as exc:  # any load failure must leave the old model running
                with self._stats.lock:
                    self._stats.reload_failures += 1
                self.get_logger().error(
                    f"model reload failed ({_one_line(exc)}); keeping {self._describe_engine()}"
                )
                with self._reload_cv:
                    if self._desired_key == key:  # not superseded by a newer request
                        self._desired_key = self._engine_key
                        self._revert_guard.trigger()
                continue
            with self._reload_cv:
                if self._desired_key != key:
                    continue  # asked for something else meanwhile: build that instead
                with self._cv:
                    self._pending_engine = engine
                self._engine_key = key
            with self._stats.lock:
                self._stats.reloads += 1
            self.get_logger().info(f"model reloaded: {self._key_text(key, engine.device)}")

    def _revert_engine_parameters(self) -> None:
        """Executor side of a failed reload: show the parameters of the model still in use."""
        self.set_parameters(
            [Parameter(name, value=value) for name, value in self._engine_key.items()]
        )

    # ------------------------------------------------------------------ inputs

    def _transport(self, which: str) -> str:
        override = self._values[f"{which}_transport"]
        return override or ("compressed" if self._values["compressed"] else "raw")

    def _create_inputs(self, depth: int) -> str:
        """Subscriptions and synchronizer; returns the backend name for the logs."""
        qos = QoSProfile(  # qos_profile_sensor_data with the configured depth
            history=HistoryPolicy.KEEP_LAST,
            depth=depth,
            reliability=ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.VOLATILE,
        )
        inputs = []
        for which, base in (("thermal", THERMAL_TOPIC), ("rgb", RGB_TOPIC)):
            if self._transport(which) == "compressed":
                inputs.append((CompressedImage, base + "/compressed"))
            else:
                inputs.append((Image, base))
        backend = self._values["sync.backend"]
        message_filters = None
        if backend != "builtin":
            try:
                import message_filters
            except ImportError:
                if backend == "message_filters":
                    raise StartupError(
                        "sync.backend is message_filters but the message_filters package is "
                        "not importable (install ros-<distro>-message-filters)"
                    ) from None
                self.get_logger().warning(
                    "message_filters is not installed: pairing with gifnet_ros.pairing."
                    "StampPairer (same nearest-stamp rule, see its docs)"
                )
        counters = (self._count_thermal, self._count_rgb)
        if message_filters is not None:
            filters = [
                message_filters.Subscriber(self, kind, topic, qos_profile=qos)
                for kind, topic in inputs
            ]
            for sub_filter, counter in zip(filters, counters, strict=True):
                sub_filter.registerCallback(counter)
            self._sync = message_filters.ApproximateTimeSynchronizer(
                filters, self._values["sync.queue_size"], self._values["sync.slop"]
            )
            self._sync.registerCallback(self._on_pair)
            self._subs = [f.sub for f in filters]
            return "message_filters"
        self._configure_sync()
        self._subs = [
            self.create_subscription(inputs[0][0], inputs[0][1], self._on_thermal, qos),
            self.create_subscription(inputs[1][0], inputs[1][1], self._on_rgb, qos),
        ]
        return "builtin"

    def _configure_sync(self) -> None:
        """Apply sync.slop / sync.queue_size (at start and on change) to the synchronizer."""
        slop, queue_size = self._values["sync.slop"], self._values["sync.queue_size"]
        if self._sync is not None:
            with self._sync.lock:  # ApproximateTimeSynchronizer reads both under this lock
                self._sync.slop = Duration(seconds=slop)
                self._sync.queue_size = queue_size
        elif self._pairer is not None:
            self._pairer.configure(slop, queue_size)
        else:
            self._pairer = StampPairer(slop, queue_size, self._on_pair)

    def _count_thermal(self, _msg: Any) -> None:
        with self._stats.lock:
            self._stats.thermal_in += 1

    def _count_rgb(self, _msg: Any) -> None:
        with self._stats.lock:
            self._stats.rgb_in += 1

    def _on_thermal(self, msg: Any) -> None:
        self._count_thermal(msg)
        self._pairer.add_thermal(msg, stamp_to_ns(msg.header.stamp))

    def _on_rgb(self, msg: Any) -> None:
        self._count_rgb(msg)
        self._pairer.add_rgb(msg, stamp_to_ns(msg.header.stamp))

    def _on_pair(self, thermal_msg: Any, rgb_msg: Any) -> None:
        """Synchronizer callback: leave the pair for the worker, never fuse here."""
        if not self._active.is_set():  # a managed node that is configured but not active
            with self._stats.lock:
                self._stats.pairs += 1
                self._stats.drops["inactive"] = self._stats.drops.get("inactive", 0) + 1
            return
        with self._cv:
            replaced = self._mailbox is not None
            self._mailbox = (thermal_msg, rgb_msg)
            self._cv.notify()
        with self._stats.lock:
            self._stats.pairs += 1
            if replaced:
                self._stats.drops["replaced"] += 1

    # ------------------------------------------------------------------ worker

    def _work(self) -> None:
        while True:
            with self._cv:
                while self._mailbox is None and not self._stopping.is_set():
                    self._cv.wait()
                if self._stopping.is_set():
                    return
                pair, self._mailbox = self._mailbox, None
                if self._pending_engine is not None:
                    self._engine, self._pending_engine = self._pending_engine, None
            try:
                self._process(*pair)
            except Exception as exc:  # the worker must outlive any single bad pair
                if self._stopping.is_set():
                    return  # publishers may already be gone
                self._error("internal", f"fusing a pair failed: {_one_line(exc)}")

    def _error(self, reason: str, text: str) -> None:
        """Count an error and log it, at most once per ERROR_LOG_INTERVAL for each reason."""
        with self._stats.lock:
            self._stats.errors[reason] = self._stats.errors.get(reason, 0) + 1
            self._stats.last_error = text
        now = time.monotonic()
        with self._error_log_lock:
            last, suppressed = self._error_log.get(reason, (-math.inf, 0))
            if now - last < ERROR_LOG_INTERVAL:
                self._error_log[reason] = (last, suppressed + 1)
                return
            self._error_log[reason] = (now, 0)
        more = f" (+{suppressed} more since the last report)" if suppressed else ""
        self.get_logger().error(text + more)

    def _convert(self, which: str, msg: Any) -> np.ndarray | None:
        try:
            if isinstance(msg, CompressedImage):
                return compressed_to_array(msg)
            return image_to_array(msg)
        except ImageConversionError as exc:
            self._error(f"{which}_conversion", f"{which} image skipped: {exc}")
            return None

    def _process(self, thermal_msg: Any, rgb_msg: Any) -> None:
        """Convert, align, fuse and publish one pair (worker thread only)."""
        started = time.monotonic()
        settings = self._settings
        rgb_stamp = stamp_to_ns(rgb_msg.header.stamp)
        if settings.max_age > 0:
            age = (self.get_clock().now().nanoseconds - rgb_stamp) / 1e9
            if age > settings.max_age:
                with self._stats.lock:
                    self._stats.drops["stale"] += 1
                return
        thermal = self._convert("thermal", thermal_msg)
        rgb = self._convert("rgb", rgb_msg)
        if thermal is None or rgb is None:
            return
        try:
            thermal = thermal_for_fusion(
                thermal,
                rgb.shape,
                settings.alignment,
                settings.thermal_rule,
                settings.percentiles,
                settings.value_range,
            )
        except (AlignmentError, ValueError) as exc:
            self._error("alignment", f"pair skipped: {_one_line(exc)}")
            return
        engine = self._engine
        engine.mode = settings.mode
        engine.max_pixels = settings.max_pixels
        engine.inference_scale = settings.inference_scale
        engine.restore = settings.restore
        try:
            self._faults.before_forward()
            luminance, colour = engine.fuse_luminance(thermal, rgb)
        except ValueError as exc:
            self._error("fusion", f"pair skipped: {_one_line(exc)}")
            return
        except RuntimeError as exc:  # out of memory, a lost device: skip, maybe move to CPU
            self._error("model", f"pair skipped, the model failed: {_one_line(exc)}")
            self._fall_back_to_cpu(engine)
            return
        model_seconds = float(engine.last_model_seconds)

        fused = fused_pixels(settings.output_encoding, luminance, colour)
        self._fused_pub.publish(self._image(fused, settings.output_encoding, rgb_msg.header))
        if settings.publish_luminance:
            if self._luminance_pub is None:
                self._luminance_pub = self.create_publisher(
                    Image, LUMINANCE_TOPIC, self._values["qos_depth"]
                )
            self._luminance_pub.publish(self._image(luminance, "mono8", rgb_msg.header))
        latency = (self.get_clock().now().nanoseconds - rgb_stamp) / 1e9
        with self._stats.lock:
            stats = self._stats
            stats.fused += 1
            stats.latency.append(latency)
            stats.model.append(model_seconds)
            stats.model_total += model_seconds
            stats.last_model = model_seconds
            stats.last_processing = time.monotonic() - started

    def _on_accelerator(self, engine: FusionEngine) -> bool:
        return engine.device.type != "cpu" or self._faults.fake_cuda

    def _fall_back_to_cpu(self, failed: FusionEngine) -> None:
        """Worker side of ``fallback_to_cpu``: load the model on the CPU and use it from now on.

        The parameters are then set to the model in use on the executor thread (as after a
        failed reload), so ``device`` reads ``cpu`` and no reload back to CUDA is attempted.
        fp16 becomes fp32, ONNX Runtime providers go back to the CPU default, and compile is
        dropped (a first CPU compile takes minutes: a fallback must be quick).
        """
        if not (self._values["fallback_to_cpu"] and self._on_accelerator(failed)):
            return
        failed_key = self._engine_key
        device = failed_key["device"]
        key = {
            **failed_key,
            "device": "cpu",
            "precision": "fp32" if failed_key["precision"] == "fp16" else failed_key["precision"],
            "onnx_providers": "",
            "compile": False,
        }
        try:
            engine = self._build_engine(key)
        except Exception as exc:  # keep the old model: it may work for the next pair
            self.get_logger().error(f"fallback to the CPU failed: {_one_line(exc)}")
            return
        where = "a fake CUDA device (fault injector)" if self._faults.fake_cuda else device
        self._faults.fake_cuda = False
        with self._reload_cv:
            self._engine, self._engine_key, self._desired_key = engine, key, key
            self._revert_guard.trigger()
        with self._stats.lock:
            self._stats.fallbacks += 1
        self.get_logger().warning(
            f"the model failed on {where}; fallback_to_cpu: fusing on the CPU from now on "
            f"({key['precision']})"
        )

    def _on_clock_jump(self, jump: Any) -> None:
        """Reset pairing and the mailbox when the clock jumped back (see ``__init__``)."""
        with self._cv:
            replaced = self._mailbox is not None
            self._mailbox = None
        if self._sync is not None:
            with self._sync.lock:
                for queue in self._sync.queues:
                    queue.clear()
        elif self._pairer is not None:
            self._pairer.reset()
        with self._stats.lock:
            self._stats.clock_jumps += 1
            if replaced:
                self._stats.drops["clock_jump"] = self._stats.drops.get("clock_jump", 0) + 1
        self.get_logger().warning(
            f"clock jumped back by {-jump.delta.nanoseconds / 1e9:.3f} s: synchronizer reset"
        )

    @staticmethod
    def _image(pixels: np.ndarray, encoding: str, header: Any) -> Image:
        fields = array_to_image_fields(pixels, encoding)
        # array.array is taken as is by the generated setter; bytes would be checked per byte.
        fields["data"] = array.array("B", fields["data"])
        return Image(header=header, **fields)

    # ------------------------------------------------------------------ health

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        current = self._stats.snapshot()
        then, previous = self._last_diag
        self._last_diag = (now, current)
        elapsed = max(now - then, 1e-9)

        def rate(key: str) -> float:
            return (current[key] - previous[key]) / elapsed

        new_errors = sum(current["errors"].values()) - sum(previous["errors"].values())
        new_drops = sum(current["drops"].values()) - sum(previous["drops"].values())
        fused_now = current["fused"] - previous["fused"]
        latency, model = current["latency"], current["model"]
        values = {
            "thermal_rate_hz": f"{rate('thermal_in'):.2f}",
            "rgb_rate_hz": f"{rate('rgb_in'):.2f}",
            "pair_rate_hz": f"{rate('pairs'):.2f}",
            "fused_rate_hz": f"{rate('fused'):.2f}",
            "thermal_received": current["thermal_in"],
            "rgb_received": current["rgb_in"],
            "pairs": current["pairs"],
            "fused": current["fused"],
            "unpaired.thermal": current["thermal_in"] - current["pairs"],
            "unpaired.rgb": current["rgb_in"] - current["pairs"],
            **{f"dropped.{k}": v for k, v in sorted(current["drops"].items())},
            **{f"errors.{k}": v for k, v in sorted(current["errors"].items())},
            "last_error": current["last_error"],
            "latency_median_s": f"{_percentile(latency, 50):.4f}",
            "latency_p95_s": f"{_percentile(latency, 95):.4f}",
            "model_median_s": f"{_percentile(model, 50):.4f}",
            "model_last_s": f"{current['last_model']:.4f}",
            "model_total_s": f"{current['model_total']:.4f}",
            "processing_last_s": f"{current['last_processing']:.4f}",
            "device": str(self._engine.device)
            + (" (fake cuda: fault injector)" if self._faults.fake_cuda else "")
            + (
                " (load-test stand-in, not GIFNet)"
                if isinstance(self._engine, LoadTestStandInNetwork)
                else ""
            ),
            "backend": self._engine_key["backend"],
            "precision": self._engine_key["precision"],
            "weights": self._engine_key["weights"] or "default",
            "mode": self._settings.mode,
            "reloads": current["reloads"],
            "reload_failures": current["reload_failures"],
            "fallbacks_to_cpu": current["fallbacks"],
            "clock_jumps": current["clock_jumps"],
            "sync_resets": self._pairer.resets if self._pairer is not None else 0,
            "sync_dropped": self._pairer.dropped if self._pairer is not None else 0,
            "sync_backend": self._backend,
        }
        if new_errors and not fused_now:
            level, message = DiagnosticStatus.ERROR, f"{new_errors} bad input(s), nothing fused"
        elif new_errors or new_drops:
            level = DiagnosticStatus.WARN
            message = f"fusing; {new_errors} error(s), {new_drops} drop(s) in the last period"
        elif current["fused"] == 0:
            level, message = DiagnosticStatus.OK, "waiting for thermal/RGB pairs"
        else:
            level, message = DiagnosticStatus.OK, "fusing"
        status = DiagnosticStatus(
            level=level,
            name=f"{self.get_name()}: fusion",
            message=message,
            hardware_id=str(self._engine.device),
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
        )
        report = DiagnosticArray(status=[status])
        report.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(report)

        period = self._values["summary_period"]
        if period > 0 and now - self._last_summary[0] >= period:
            self._log_summary(now, current)

    def _log_summary(self, now: float, current: dict[str, Any]) -> None:
        """One log line with rates over the whole summary period and totals since start."""
        then, previous = self._last_summary
        self._last_summary = (now, current)
        elapsed = max(now - then, 1e-9)
        rates = "/".join(
            f"{(current[k] - previous[k]) / elapsed:.2f}" for k in ("thermal_in", "rgb_in", "fused")
        )
        line = (
            f"thermal/rgb/fused {rates} Hz over {elapsed:.0f} s; total fused "
            f"{current['fused']} of {current['pairs']} pairs, drops {current['drops']}, "
            f"errors {current['errors']}"
        )
        if current["latency"]:
            line += (
                f"; latency median {_percentile(current['latency'], 50):.3f} s, p95 "
                f"{_percentile(current['latency'], 95):.3f} s, model "
                f"{_percentile(current['model'], 50):.3f} s"
            )
        self.get_logger().info(line)

    # ------------------------------------------------------------------ shutdown

    def close(self, timeout: float = 2.0) -> bool:
        """Stop the threads; returns False if the worker is still inside a forward pass.

        A forward pass cannot be interrupted and takes seconds on a CPU at full resolution;
        the threads are daemons so they do not hold the process, and ``main`` deals with the
        exit (see there).
        """
        self._stopping.set()
        if self._worker is None or self._loader is None:
            return True  # never brought up (a managed node not configured)
        with self._cv:
            self._cv.notify_all()
        with self._reload_cv:
            self._reload_cv.notify_all()
        deadline = time.monotonic() + timeout
        self._worker.join(timeout)
        self._loader.join(max(0.0, deadline - time.monotonic()))
        return not self._worker.is_alive()


class FusionNode(_FusionCore, Node):
    """Subscribes thermal/image + rgb/image, publishes fused/image (see the module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        Node.__init__(self, node_name, **kwargs)
        self._declare()
        self._active.set()
        self._bring_up()


class FusionLifecycleNode(_FusionCore, LifecycleNode):
    """The same node as a managed (lifecycle) node, as perception stacks expect.

    configure: load the model, create inputs and outputs (diagnostics start); activate: fuse;
    deactivate: stop fusing (pairs are counted as ``dropped.inactive``); cleanup: destroy
    inputs and outputs and free the model (and the CUDA cache); shutdown from any state: the
    same. A configuration that cannot run makes configure fail with the one-line reason in
    the log, and the node stays unconfigured.
    """

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        LifecycleNode.__init__(self, node_name, **kwargs)
        self._declare()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._bring_up()
        except (StartupError, WeightsError, ValueError, RuntimeError) as exc:
            self.get_logger().error(f"cannot configure: {_one_line(exc)}")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active.set()
        self.get_logger().info("active: fusing")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active.clear()
        with self._cv:
            self._mailbox = None
        self.get_logger().info("inactive: not fusing")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._tear_down()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active.clear()
        if self._started:
            self._tear_down()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self.on_shutdown(state)


def _parser() -> argparse.ArgumentParser:
    table = "\n".join(
        f"  {s.name} = {s.default!r}{' (read-only)' if s.read_only else ''}\n"
        + textwrap.fill(s.description, width=88, initial_indent=" " * 6, subsequent_indent=" " * 6)
        for s in PARAMETERS
    )
    parser = argparse.ArgumentParser(
        prog="fusion_node",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="GIFNet thermal/RGB fusion node: subscribes thermal/image and rgb/image, "
        "publishes fused/image with the RGB header, and statistics on /diagnostics.",
        epilog="ROS parameters (set with --ros-args -p NAME:=VALUE or --params-file FILE; "
        "config/fusion.yaml documents each):\n" + table,
    )
    parser.add_argument(
        "--lifecycle",
        action="store_true",
        help="run as a managed (lifecycle) node: the model is loaded on configure and pairs "
        "are fused only while active",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console script ``fusion_node`` / ``gifnet-fusion-node``; ROS arguments pass through.

    ``--lifecycle`` runs the managed node instead (what ``lifecycle_main`` does).
    """
    argv = list(sys.argv if argv is None else argv)
    options = _parser().parse_args(remove_ros_args(args=argv)[1:])
    rclpy.init(args=argv)
    try:
        node = FusionLifecycleNode() if options.lifecycle else FusionNode()
    except (StartupError, ParameterException, WeightsError, ValueError, RuntimeError) as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {_one_line(exc)}")
        if rclpy.ok():
            rclpy.shutdown()
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # Ctrl-C / SIGTERM / ros2 launch stopping us: the normal way out
    finally:
        finished = node.close()
        logger = node.get_logger()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    if not finished:
        # Python's exit would finalise libtorch under the worker's running forward pass, and
        # libtorch aborts (std::terminate) then. ROS is shut down and nothing is left to
        # flush but the console, so leave without interpreter finalisation.
        logger.warning("fusion worker still inside a forward pass; exiting without it")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def lifecycle_main(argv: list[str] | None = None) -> int:
    """Console script ``fusion_lifecycle_node`` / ``gifnet-fusion-lifecycle-node``."""
    argv = list(sys.argv if argv is None else argv)
    return main([argv[0], "--lifecycle", *argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
