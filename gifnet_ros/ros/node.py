"""The live fusion node: synchronized thermal + RGB images in, one fused image out.

ROS wiring over the package's ROS-free parts and the node's own modules (gifnet_ros.ros):
``params`` declares the parameters and ``settings`` validates them, ``head`` subscribes and
prepares the pairs of one camera head, ``worker`` runs inference off the executor on the
newest pair (FusionThread), ``model_loader`` builds and swaps models, ``stats`` keeps the
counters behind /diagnostics and the log-on-change lines, ``camera_info`` fits the RGB
calibration to the fused image. From gifnet_ros.fusion, ``conversion`` turns messages into
arrays, ``align`` puts the thermal image on the RGB grid, ``thermal`` brings radiometric data to
8 bits, ``engine`` fuses, and ``pairing`` pairs messages when ``message_filters`` is not
installed.

Nothing queues without bound: the only queues are the synchronizer's (``sync.queue_size`` per
input) and the worker's mailbox (one pair), so a slow model shows up as counted drops and never
as growing latency or memory. Failures stay local: a bad message, a pair of mismatched sizes or
a model error (CUDA out of memory) skips that pair with a throttled one-line log and a counter
in the diagnostics; with ``fallback_to_cpu`` a model failure on a GPU moves the model to the
CPU. A clock jumping back (a bag replayed in a loop with ``use_sim_time``) resets the
synchronizer and the mailbox.

``FusionLifecycleNode`` (``--lifecycle``, console script ``lifecycle_main``) is the same node
as a managed node: the model is loaded on configure and freed on cleanup, pairs are fused only
while active.

Run ``gifnet-fusion-node --help`` for the parameters; ``config/fusion.yaml`` documents each.
"""

from __future__ import annotations

import argparse
import array
import gc
import os
import signal
import sys
import threading
import time
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import JumpThreshold
from rclpy.duration import Duration
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.utilities import remove_ros_args

from gifnet_ros.fusion.errors import one_line
from gifnet_ros.fusion.pairing import stamp_to_ns
from gifnet_ros.models.weights import WeightsError
from gifnet_ros.ros.head import Head, Prepared
from gifnet_ros.ros.model_loader import EngineKey, ModelLoader, precision_text
from gifnet_ros.ros.params import (
    ENGINE_KEYS,
    PARAMETERS,
    SPECS,
    StartupError,
    head_specs,
    help_table,
)
from gifnet_ros.ros.settings import Settings, check_weights, needs_weights, validate
from gifnet_ros.ros.stats import FusionStats, diagnostic_status
from gifnet_ros.ros.worker import FusionThread, MessagePair

NODE_NAME = "fusion_node"
DIAGNOSTICS_TOPIC = "/diagnostics"  # absolute, like diagnostic_updater: the aggregator's input

CLOCK_JUMP_BACK = 1.0
"""Seconds the node clock must jump back before the synchronizer and mailbox are reset."""
CLOSE_TIMEOUT = 2.0
"""Seconds ``close`` waits for the worker to finish a forward pass."""


def _seconds(value: float | None) -> str:
    return "none" if value is None else f"{value:.3f}"


class _FusionCore:
    """The fusion node's logic, shared by the plain node and the managed (lifecycle) one.

    A mixin over ``rclpy.node.Node``: ``_declare`` sets up the parameters (construction time),
    ``_bring_up`` loads the model and creates the heads (inputs and outputs) and threads,
    ``_tear_down`` undoes that. The plain :class:`FusionNode` brings itself up at once;
    :class:`FusionLifecycleNode` does it on configure and tears down on cleanup.
    """

    def _declare(self) -> None:
        self._stats = FusionStats()  # the model's counters (reloads, fallbacks, clock jumps)
        self._started = False
        self._active = threading.Event()  # pairs are fused only while set (lifecycle: active)
        self._worker: FusionThread | None = None
        self._loader: ModelLoader | None = None
        self._heads: dict[str, Head] = {}
        self._values: dict[str, Any] = {spec.name: spec.default for spec in PARAMETERS}
        # Registered before declaring, so values from a params file or the command line go
        # through the same checks as run-time changes and a bad one stops the node at start.
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._declaring = True  # whether weights are needed is known once backend is declared
        for spec in PARAMETERS:
            self._values[spec.name] = self.declare_parameter(
                spec.name, spec.default, spec.descriptor()
            ).value
        # Each named head's own parameters, defaulting to the node-level values just read.
        for spec in head_specs(self._values["heads"]).values():
            base = spec.name.partition(".")[2]
            self._values[spec.name] = self.declare_parameter(
                spec.name, self._values[base], spec.descriptor()
            ).value
        self._declaring = False
        if needs_weights(self._values):
            reason = check_weights(self._values["weights"])
            if reason:
                raise StartupError(reason)
        self._settings = Settings.from_values(self._values)

    def _bring_up(self) -> None:
        """Load the model, create the heads' inputs and outputs, timer and threads."""
        self._loader = ModelLoader(  # loads the model now: fails before anything is created
            self._wanted_engine_key(),
            lambda: self._settings.mode,
            self._stats,
            self.get_logger(),
            lambda: self._revert_guard.trigger(),
        )
        # A failed reload reverts the parameters on the executor thread (parameter updates
        # are not thread-safe in rclpy); the loader and worker threads only trigger this.
        self._revert_guard = self.create_guard_condition(self._revert_engine_parameters)
        self._worker = FusionThread(self._process, self._on_worker_error)
        self._diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        message_filters = self._message_filters()
        self._heads = {
            name: Head(
                self,
                name,
                self._values,
                lambda: self._settings,
                self._worker.offer,
                self._active,
                message_filters,
            )
            for name in self._values["heads"]
        }
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
        self._last_diag = {
            name: (time.monotonic(), head.stats.snapshot()) for name, head in self._heads.items()
        }
        self._worker.start()
        self._loader.start()
        self._started = True

    def _message_filters(self) -> Any:
        """The message_filters module for sync.backend, or None for the package's pairing."""
        backend = self._values["sync.backend"]
        if backend == "builtin":
            return None
        try:
            import message_filters
        except ImportError:
            if backend == "message_filters":
                raise StartupError(
                    "sync.backend is message_filters but the message_filters package is "
                    "not importable (install ros-<distro>-message-filters)"
                ) from None
            self.get_logger().warning(
                "message_filters is not installed: pairing with gifnet_ros.fusion.pairing."
                "StampPairer (same nearest-stamp rule, see its docs)"
            )
            return None
        return message_filters

    def _wiring(self) -> str:
        """Inputs, outputs and pairing, for the log lines that say what the node does."""
        heads = "; ".join(
            (f"head {name}: " if name else "") + head.wiring() for name, head in self._heads.items()
        )
        backend = next(iter(self._heads.values())).sync_backend
        return (
            f"{heads} (mode {self._settings.mode}, sync {backend} slop "
            f"{self._values['sync.slop']} s)"
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
        for head in self._heads.values():
            head.destroy()
        self._heads = {}
        self.destroy_publisher(self._diag_pub)
        self.destroy_guard_condition(self._revert_guard)
        device = self._loader.release()
        gc.collect()  # the model's tensors, so that the CUDA cache below can be returned
        if device.type == "cuda":
            import torch

            torch.cuda.empty_cache()
        self.get_logger().info(f"model released ({device}); inputs and outputs destroyed")
        return finished

    # ------------------------------------------------------------------ parameters

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Check every change; apply it only if all pass, so a rejection changes nothing."""
        changes = {}
        known = SPECS.keys() | self._values.keys()
        for parameter in parameters:
            if parameter.name in known:  # not e.g. use_sim_time, handled by rclpy itself
                value = parameter.value
                changes[parameter.name] = (
                    list(value) if isinstance(value, (array.array, tuple)) else value
                )
        result = validate(self._values, changes, check_weights_file=not self._declaring)
        if isinstance(result, str):
            return SetParametersResult(successful=False, reason=result)
        self._values = result.values
        self._settings = result.settings  # read by the worker at its next pair
        if self._started:
            self._apply_changes(result.changed)
        return SetParametersResult(successful=True)

    def _apply_changes(self, changed: set[str]) -> None:
        """Act on accepted changes that need more than the new settings snapshot."""
        for head in self._heads.values():
            head.set_values(self._values)
        if changed & set(ENGINE_KEYS):
            self._loader.request(self._wanted_engine_key())
        if changed & {"sync.slop", "sync.queue_size"}:
            for head in self._heads.values():
                head.configure_sync()
        if "diagnostics_period" in changed:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(
                self._values["diagnostics_period"], self._publish_diagnostics
            )
        if changed - set(ENGINE_KEYS):
            self.get_logger().info(
                "parameters changed: "
                + ", ".join(f"{n}={self._values[n]}" for n in sorted(changed))
            )

    def _wanted_engine_key(self) -> EngineKey:
        return {name: self._values[name] for name in ENGINE_KEYS}

    def _revert_engine_parameters(self) -> None:
        """Executor side of a failed reload or a CPU fallback: show the model in use."""
        self.set_parameters(
            [Parameter(name, value=value) for name, value in self._loader.key.items()]
        )

    # ------------------------------------------------------------------ worker

    def _on_worker_error(self, exc: Exception) -> None:
        text = f"fusing pairs failed: {one_line(exc)}"
        line = self._stats.error("internal", text, time.monotonic())
        if line is not None:
            self.get_logger().error(line)

    def _process(self, pairs: dict[str, MessagePair]) -> None:
        """Prepare each head's pair, fuse (on CUDA pairs of one size in one network call) and
        publish (worker thread only). A head's bad pair is skipped without touching the
        others'."""
        started = time.monotonic()
        settings = self._settings
        ready = [
            prepared
            for name, (thermal_msg, rgb_msg) in pairs.items()
            if name in self._heads
            and (prepared := self._heads[name].prepare(thermal_msg, rgb_msg, started))
        ]
        engine = self._loader.take()
        # On CUDA, pairs of one size go through the network in one batch (a GPU does a batch
        # of several in about the time of one). A CPU gains nothing from a batch (ONNX Runtime
        # runs it pair by pair; benchmarks/heads.py), so there each head's pair is published
        # as soon as it is fused instead of waiting for the others'.
        batched = engine.device.type == "cuda"
        groups: dict[Any, list[Prepared]] = {}
        for prepared in ready:
            groups.setdefault(prepared.shape() if batched else id(prepared), []).append(prepared)
        engine.mode = settings.mode
        engine.max_pixels = settings.max_pixels
        engine.inference_scale = settings.inference_scale
        engine.restore = settings.restore
        for group in groups.values():
            self._fuse_group(engine, group, settings, started)

    def _fuse_group(
        self, engine: Any, group: list[Prepared], settings: Settings, started: float
    ) -> None:
        """Fuse pairs of one size together; if that fails, each on its own, so that the error
        lands on the head whose pair caused it."""
        try:
            if len(group) == 1:
                fused = [engine.fuse_luminance(group[0].thermal, group[0].rgb)]
            else:
                fused = engine.fuse_luminance_batch([(p.thermal, p.rgb) for p in group])
        except ValueError as exc:
            if len(group) > 1:
                for prepared in group:
                    self._fuse_group(engine, [prepared], settings, started)
                return
            group[0].head.error("fusion", f"pair skipped: {one_line(exc)}", started)
            return
        except RuntimeError as exc:  # out of memory, a lost device: skip, maybe move to CPU
            for prepared in group:
                prepared.head.error(
                    "model", f"pair skipped, the model failed: {one_line(exc)}", started
                )
            self._fall_back_to_cpu(engine)
            return
        model_seconds = float(engine.last_model_seconds) / len(group)
        now_ns = self.get_clock().now().nanoseconds
        for prepared, (luminance, colour) in zip(group, fused, strict=True):
            prepared.head.publish(prepared, luminance, colour, settings)
            latency = (now_ns - stamp_to_ns(prepared.header.stamp)) / 1e9
            prepared.head.stats.fused_one(latency, model_seconds, time.monotonic() - started)

    def _fall_back_to_cpu(self, failed: Any) -> None:
        """Worker side of ``fallback_to_cpu``: load the model on the CPU and use it from now on.

        The parameters are then set to the model in use on the executor thread (as after a
        failed reload), so ``device`` reads ``cpu`` and no reload back to CUDA is attempted.
        fp16 becomes fp32, ONNX Runtime providers go back to the CPU default, and compile is
        dropped (a first CPU compile takes minutes: a fallback must be quick).
        """
        if not (self._values["fallback_to_cpu"] and failed.device.type != "cpu"):
            return
        failed_key = self._loader.key
        key = {
            **failed_key,
            "device": "cpu",
            "precision": "fp32" if failed_key["precision"] == "fp16" else failed_key["precision"],
            "onnx_providers": "",
            "compile": False,
        }
        try:
            engine = self._loader.build(key)
        except Exception as exc:  # keep the old model: it may work for the next pair
            self.get_logger().error(f"fallback to the CPU failed: {one_line(exc)}")
            return
        self._loader.replace(engine, key)
        self._revert_guard.trigger()
        with self._stats.lock:
            self._stats.fallbacks += 1
        self.get_logger().warning(
            f"the model failed on {failed.device}; fallback_to_cpu: fusing on the CPU from now "
            f"on ({precision_text(engine)})"
        )

    def _on_clock_jump(self, jump: Any) -> None:
        """Reset pairing and the mailboxes when the clock jumped back (see ``_bring_up``)."""
        dropped = set(self._worker.clear())
        with self._stats.lock:
            self._stats.clock_jumps += 1
        for name, head in self._heads.items():
            head.reset_sync()
            if name in dropped:
                with head.stats.lock:
                    head.stats.drop("clock_jump")
        self.get_logger().warning(
            f"clock jumped back by {-jump.delta.nanoseconds / 1e9:.3f} s: synchronizer reset"
        )

    # ------------------------------------------------------------------ health

    def _publish_diagnostics(self) -> None:
        """Timer: each head's status on /diagnostics, and a log line if its activity changed."""
        now = time.monotonic()
        engine, key = self._loader.newest(), self._loader.key
        model = self._stats.snapshot()
        statuses = []
        for name, head in self._heads.items():
            current = {
                **head.stats.snapshot(),
                **{k: model[k] for k in ("reloads", "reload_failures", "fallbacks", "clock_jumps")},
            }
            then, previous = self._last_diag[name]
            self._last_diag[name] = (now, current)
            extra = {
                "device": str(engine.device),
                "network": key["network"],
                "backend": engine.backend_text(),
                "precision": precision_text(engine),
                "instruction_set": engine.instruction_set,
                "weights": (key["weights"] if key["network"] == "gifnet" else key["tim_weights"])
                or "default",
                "mode": self._settings.mode,
                **head.sync_counts(),
                "sync_backend": head.sync_backend,
                "camera_info": "rgb/camera_info received" if head.rgb_info else "none received",
                "frozen.pauses": head.freeze.pauses,
                "unpaired_stamp_gap_s": _seconds(head.stamp_gap()),
                "heads": len(self._heads),
            }
            if model["errors"]:
                extra["errors.internal"] = model["errors"].get("internal", 0)
            statuses.append(
                diagnostic_status(
                    f"{self.get_name()}: fusion" + (f" {name}" if name else ""),
                    current,
                    previous,
                    max(now - then, 1e-9),
                    extra,
                    str(engine.device),
                )
            )
            prefix = f"head {name}: " if name else ""
            for line in head.activity.update(now, current):
                self.get_logger().info(prefix + line)
            warning = head.check_pairing(self._values["sync.slop"])
            if warning is not None:
                self.get_logger().warning(warning)
        report = DiagnosticArray(status=statuses)
        report.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(report)

    # ------------------------------------------------------------------ shutdown

    def close(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        """Stop the threads; returns False if the worker is still inside a forward pass.

        A forward pass cannot be interrupted and takes seconds on a CPU at full resolution;
        the threads are daemons so they do not hold the process, and ``main`` deals with the
        exit (see there).
        """
        if self._worker is None or self._loader is None:
            return True  # never brought up (a managed node not configured)
        deadline = time.monotonic() + timeout
        finished = self._worker.close(timeout)
        self._loader.close(max(0.0, deadline - time.monotonic()))
        return finished


class FusionNode(_FusionCore, Node):
    """Subscribes thermal/image + rgb/image, publishes fused/image (see the module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        Node.__init__(self, node_name, **kwargs)
        self._declare()
        self._active.set()
        self._bring_up()
        self.get_logger().info(f"fusing {self._wiring()} with {self._loader.describe()}")


class FusionLifecycleNode(_FusionCore, LifecycleNode):
    """The same node as a managed (lifecycle) node, as perception stacks expect.

    configure: load the model, create inputs and outputs (diagnostics start); activate: fuse;
    deactivate: stop fusing (pairs are counted as ``dropped.inactive``); cleanup: destroy
    inputs and outputs and free the model (and the CUDA cache); shutdown from any state: the
    same. A configuration that cannot run makes configure fail with the one-line reason in
    the log, and the node stays unconfigured. Each transition logs what is true after it.
    """

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        LifecycleNode.__init__(self, node_name, **kwargs)
        self._declare()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._bring_up()
        except (StartupError, WeightsError, ValueError, RuntimeError) as exc:
            self.get_logger().error(f"cannot configure: {one_line(exc)}")
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(
            f"configured: model loaded ({self._loader.describe()}); inputs ready, pairs are "
            "counted but not fused until activated"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active.set()
        self.get_logger().info(f"active: fusing {self._wiring()}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active.clear()
        for name in self._worker.clear():
            with self._heads[name].stats.lock:
                self._heads[name].stats.drop("inactive")
        self.get_logger().info(
            "inactive: not fusing (pairs are counted as dropped.inactive); model kept loaded"
        )
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
    parser = argparse.ArgumentParser(
        prog="fusion_node",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="GIFNet thermal/RGB fusion node: subscribes thermal/image and rgb/image, "
        "publishes fused/image with the RGB header (and fused/camera_info when rgb/camera_info "
        "is published), and statistics on /diagnostics.",
        epilog="ROS parameters (set with --ros-args -p NAME:=VALUE or --params-file FILE; "
        "config/fusion.yaml documents each):\n" + help_table(),
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
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {one_line(exc)}")
        if rclpy.ok():
            rclpy.shutdown()
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # Ctrl-C / SIGTERM / ros2 launch stopping us: the normal way out
    finally:
        # Shutting down already: a second SIGINT (a terminal's Ctrl-C reaches the node, and
        # ros2 launch forwards one more) must not interrupt the cleanup below.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
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
