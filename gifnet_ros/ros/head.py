"""One camera head of the fusion node: its inputs, their pairing, its outputs and its counters.

A robot with several thermal/RGB pairs runs one node (one model in memory) with a head per
pair, each in its own namespace (``front/thermal/image`` ...); a single-camera robot has one
head in the node's own namespace. Everything that belongs to one pair of cameras lives here:
the subscriptions and the synchronizer (message_filters, or the package's ``StampPairer``), the
thermal clock offset, the frozen-stream watch, the thermal stretch's state over time, the
latest RGB ``CameraInfo``, the publishers and the counters behind the head's /diagnostics
status. The model, the worker thread and the parameters are the node's, shared by all heads.

Every input and output accepts the standard QoS overrides (REP-2003), e.g. ``--ros-args -p
qos_overrides./fused/image.publisher.durability:=transient_local`` for a recorder that
subscribes transient local.
"""

from __future__ import annotations

import array
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSPolicyKind,
    QoSProfile,
    ReliabilityPolicy,
)
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from gifnet_ros.fusion.align import AlignmentError, thermal_for_fusion
from gifnet_ros.fusion.conversion import (
    ImageConversionError,
    array_to_compressed,
    array_to_image_fields,
    compressed_to_array,
    fused_pixels,
    image_to_array,
)
from gifnet_ros.fusion.errors import one_line
from gifnet_ros.fusion.freeze import FreezeWatch, Pause
from gifnet_ros.fusion.pairing import StampPairer, stamp_to_ns
from gifnet_ros.fusion.thermal import RangeFilter, frame_range
from gifnet_ros.ros.camera_info import fused_camera_info
from gifnet_ros.ros.settings import HeadSettings, Settings
from gifnet_ros.ros.stats import Activity, FusionStats

THERMAL_TOPIC = "thermal/image"
RGB_TOPIC = "rgb/image"
RGB_INFO_TOPIC = "rgb/camera_info"
FUSED_TOPIC = "fused/image"
FUSED_INFO_TOPIC = "fused/camera_info"
FUSED_COMPRESSED_TOPIC = "fused/image/compressed"  # image_transport's name for it
LUMINANCE_TOPIC = "fused/luminance"
RECENT_STAMPS = 30
"""Stamps kept per input for the gap between the cameras (a second at 30 Hz)."""

QOS_OVERRIDES = QoSOverridingOptions(
    [
        QoSPolicyKind.HISTORY,
        QoSPolicyKind.DEPTH,
        QoSPolicyKind.RELIABILITY,
        QoSPolicyKind.DURABILITY,
    ]
)
"""The policies a user may override per topic (``qos_overrides.<topic>.<entity>.<policy>``)."""


class Prepared:
    """A pair ready for the network: the RGB header, and both images on the RGB grid."""

    def __init__(self, head: Head, header: Any, thermal: np.ndarray, rgb: np.ndarray) -> None:
        self.head, self.header, self.thermal, self.rgb = head, header, thermal, rgb

    def shape(self) -> tuple[Any, ...]:
        """What pairs must share to go through the network in one batch."""
        return self.thermal.shape, self.thermal.dtype, self.rgb.shape, self.rgb.dtype


class Head:
    """The inputs, pairing, outputs and counters of one thermal/RGB camera pair.

    ``node`` is the fusion node (inputs and outputs are its entities); ``settings`` returns the
    node's current :class:`Settings`; ``offer`` hands a pair to the node's worker; ``active``
    tells whether pairs are fused now (a managed node that is not active counts them as
    dropped); ``message_filters`` is that module, or None to pair with ``StampPairer``.
    """

    def __init__(
        self,
        node: Node,
        name: str,
        values: dict[str, Any],
        settings: Callable[[], Settings],
        offer: Callable[[str, Any, Any], bool],
        active: threading.Event,
        message_filters: Any,
    ) -> None:
        self.node, self.name = node, name
        self._settings, self._offer, self._active = settings, offer, active
        self._values = values
        self._prefix = f"{name}/" if name else ""
        self.stats = FusionStats()
        self.freeze = FreezeWatch()
        self._range = RangeFilter(self.head_settings().time_constant)
        self._range_lock = threading.Lock()
        self._said: set[str] = set()  # input quirks already logged (said once each)
        # (Corrected) stamps of each input since the last pair: their gap when nothing pairs.
        self._unpaired: dict[str, deque[int]] = {
            "thermal": deque(maxlen=RECENT_STAMPS),
            "rgb": deque(maxlen=RECENT_STAMPS),
        }
        self._last_thermal: Any = None
        self.rgb_info: CameraInfo | None = None
        self._sync: Any = None
        self._pairer: StampPairer | None = None
        depth = values["qos_depth"]
        self.fused_pub = self._publisher(Image, FUSED_TOPIC, depth)
        self.fused_info_pub = self._publisher(CameraInfo, FUSED_INFO_TOPIC, depth)
        self.luminance_pub: Any = None
        self.compressed_pub: Any = None
        self.sync_backend = self._create_inputs(depth, message_filters)
        snapshot = self.stats.snapshot()
        self.activity = Activity(
            {"thermal_in": self.subs[0].topic_name, "rgb_in": self.subs[1].topic_name}, snapshot
        )

    def head_settings(self) -> HeadSettings:
        return self._settings().heads[self.name]

    def wiring(self) -> str:
        """Inputs and output of this head, for the log lines that say what the node does."""
        thermal, rgb = (sub.topic_name for sub in self.subs[:2])
        return f"{thermal} + {rgb} -> {self.fused_pub.topic_name}"

    def destroy(self) -> None:
        for subscription in self.subs:
            self.node.destroy_subscription(subscription)
        for publisher in (
            self.fused_pub,
            self.fused_info_pub,
            self.luminance_pub,
            self.compressed_pub,
        ):
            if publisher is not None:
                self.node.destroy_publisher(publisher)
        self.subs = []
        self._sync = self._pairer = None
        self.rgb_info = None

    # ------------------------------------------------------------------ inputs

    def _publisher(self, kind: Any, topic: str, depth: int) -> Any:
        return self.node.create_publisher(
            kind, self._prefix + topic, depth, qos_overriding_options=QOS_OVERRIDES
        )

    def _subscribe(self, kind: Any, topic: str, callback: Callable[[Any], None], qos: Any) -> Any:
        return self.node.create_subscription(
            kind, topic, callback, qos, qos_overriding_options=QOS_OVERRIDES
        )

    def _transport(self, which: str) -> str:
        override = self._values[f"{which}_transport"]
        return override or ("compressed" if self._values["compressed"] else "raw")

    def _create_inputs(self, depth: int, message_filters: Any) -> str:
        """Subscriptions and synchronizer (``message_filters``: the module, or None for the
        package's own pairing); returns the pairing backend's name for the logs."""
        qos = QoSProfile(  # qos_profile_sensor_data with the configured depth
            history=HistoryPolicy.KEEP_LAST,
            depth=depth,
            reliability=ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.VOLATILE,
        )
        # Best effort matches reliable publishers too: camera drivers publish either way.
        node = self.node
        info_topic = self._prefix + RGB_INFO_TOPIC
        info_sub = self._subscribe(CameraInfo, info_topic, self._on_rgb_info, qos)
        inputs = []
        for which, base in (("thermal", THERMAL_TOPIC), ("rgb", RGB_TOPIC)):
            topic = self._prefix + base
            if self._transport(which) == "compressed":
                inputs.append((CompressedImage, topic + "/compressed"))
            else:
                inputs.append((Image, topic))
        if message_filters is not None:
            thermal_in, rgb_in = (
                message_filters.Subscriber(
                    node, kind, topic, qos_profile=qos, qos_overriding_options=QOS_OVERRIDES
                )
                for kind, topic in inputs
            )
            # Thermal messages reach the synchronizer with their stamps corrected by
            # sync.thermal_offset, through a filter of message_filters' own kind.
            corrected = message_filters.SimpleFilter()
            thermal_in.registerCallback(
                lambda msg: corrected.signalMessage(msg) if self._thermal_in(msg) else None
            )
            rgb_in.registerCallback(self._rgb_in)
            self._sync = message_filters.ApproximateTimeSynchronizer(
                [corrected, rgb_in], self._values["sync.queue_size"], self._values["sync.slop"]
            )
            self._sync.registerCallback(self._on_pair)
            self.subs = [thermal_in.sub, rgb_in.sub, info_sub]
            return "message_filters"
        self.configure_sync()
        self.subs = [
            self._subscribe(*inputs[0], self._on_thermal, qos),
            self._subscribe(*inputs[1], self._on_rgb, qos),
            info_sub,
        ]
        return "builtin"

    def configure_sync(self) -> None:
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

    def set_values(self, values: dict[str, Any]) -> None:
        """The node's parameter values changed (read by configure_sync and the transports)."""
        self._values = values

    def reset_sync(self) -> None:
        """Forget queued messages (the clock jumped back) and the thermal stretch's past."""
        if self._sync is not None:
            with self._sync.lock:
                for queue in self._sync.queues:
                    queue.clear()
        elif self._pairer is not None:
            self._pairer.reset()
        with self._range_lock:
            self._range.reset()

    def stamp_gap(self) -> float | None:
        """Median over the RGB stamps since the last pair of (nearest thermal stamp - RGB
        stamp), in seconds, after sync.thermal_offset; None while pairs form, or before three
        of each arrived."""
        thermal, rgb = list(self._unpaired["thermal"]), list(self._unpaired["rgb"])
        if len(thermal) < 3 or len(rgb) < 3:
            return None
        gaps = [min((t - r for t in thermal), key=abs) for r in rgb]
        return float(np.median(gaps)) / 1e9

    def check_pairing(self, slop: float) -> str | None:
        """Called with each diagnostics period: a line, once until a pair forms, when both
        cameras send but nothing pairs because their stamps are further apart than the slop
        (a driver that stamps on host receipt lags by tens to hundreds of ms). The nearest
        stamps only show a lag under half a frame period; gifnet-sync-offset measures any."""
        gap = self.stamp_gap()
        if gap is None or abs(gap) <= slop or "gap" in self._said:
            return None
        self._said.add("gap")
        head = f"head {self.name}: " if self.name else ""
        later = "after" if gap > 0 else "before"
        return (
            f"{head}nothing pairs: the nearest thermal stamps are a median {abs(gap):.3f} s "
            f"{later} the RGB ones, more than sync.slop {slop:g} s; a driver stamping on host "
            "receipt? gifnet-sync-offset BAG measures the sync.thermal_offset to set"
        )

    def sync_counts(self) -> dict[str, int]:
        pairer = self._pairer
        return {
            "sync_resets": pairer.resets if pairer is not None else 0,
            "sync_dropped": pairer.dropped if pairer is not None else 0,
        }

    def _on_rgb_info(self, msg: CameraInfo) -> None:
        self.rgb_info = msg  # the latest calibration; read by the worker per pair

    def _stamp(self, which: str, msg: Any) -> int:
        """The message's stamp. A driver's habits that the node lives with are said once each:
        an empty frame_id (the fused image inherits the RGB one) and no stamp at all (0: such
        images pair with each other in arrival order, with nothing to tell their times)."""
        if not msg.header.frame_id and f"{which} frame_id" not in self._said:
            self._said.add(f"{which} frame_id")
            inherits = "; fused/image inherits it" if which == "rgb" else ""
            self._say(f"{which} images have an empty frame_id{inherits} (set the driver's)")
        stamp = stamp_to_ns(msg.header.stamp)
        if stamp == 0 and f"{which} stamp" not in self._said:
            self._said.add(f"{which} stamp")
            self._say(
                f"{which} images carry no stamp (0): paired with unstamped images of the other "
                "camera as they come (set the driver's stamps)"
            )
        return stamp

    def _say(self, line: str) -> None:
        head = f"head {self.name}: " if self.name else ""
        self.node.get_logger().warning(head + line)

    def _thermal_in(self, msg: Any) -> bool:
        """Count a thermal message, correct its stamp by sync.thermal_offset (in the message,
        so that every pairing sees the corrected one), and note it for the frozen-stream
        watch; False when it cannot be paired."""
        with self.stats.lock:
            self.stats.thermal_in += 1
        offset = self.head_settings().thermal_offset_ns
        stamp = self._stamp("thermal", msg) + offset
        if offset:
            if stamp < 0:
                return False
            msg.header.stamp = Time(nanoseconds=stamp).to_msg()
        self.freeze.received(stamp)
        self._last_thermal = msg
        self._unpaired["thermal"].append(stamp)
        return True

    def _rgb_in(self, msg: Any) -> None:
        """Count an RGB message and, while the thermal stream is silent, act on the pause."""
        with self.stats.lock:
            self.stats.rgb_in += 1
        stamp = self._stamp("rgb", msg)
        self._unpaired["rgb"].append(stamp)
        settings = self._settings()
        if settings.freeze_action == "ignore":
            return
        latest, pause = self.freeze.silent(stamp, settings.freeze_timeout_ns)
        if latest is None:
            return
        if pause is not None:
            self._log_pause(pause, settings)
        held = self._last_thermal
        fresh_enough = stamp - latest <= settings.freeze_max_age_ns
        if settings.freeze_action == "hold" and held is not None and fresh_enough:
            self._on_pair(held, msg)

    def _on_thermal(self, msg: Any) -> None:
        if self._thermal_in(msg):
            self._pairer.add_thermal(msg, stamp_to_ns(msg.header.stamp))

    def _on_rgb(self, msg: Any) -> None:
        self._rgb_in(msg)
        self._pairer.add_rgb(msg, stamp_to_ns(msg.header.stamp))

    def _on_pair(self, thermal_msg: Any, rgb_msg: Any) -> None:
        """Synchronizer callback: leave the pair for the worker, never fuse here."""
        for stamps in self._unpaired.values():
            stamps.clear()
        self._said.discard("gap")
        if not self._active.is_set():  # a managed node that is configured but not active
            with self.stats.lock:
                self.stats.pairs += 1
                self.stats.drop("inactive")
            return
        replaced = self._offer(self.name, thermal_msg, rgb_msg)
        with self.stats.lock:
            self.stats.pairs += 1
            if replaced:
                self.stats.drop("replaced")

    def _log_pause(self, pause: Pause, settings: Settings) -> None:
        what = (
            "the same thermal image again"
            if pause.kind == "repeat"
            else f"no thermal image for {settings.freeze_timeout_ns / 1e9:g} s"
        )
        action = {
            "skip": "skipping pairs until it moves (thermal.freeze_action skip)",
            "hold": f"fusing with the last thermal image up to "
            f"{settings.freeze_max_age_ns / 1e9:g} s old (thermal.freeze_action hold)",
        }[settings.freeze_action]
        head = f"head {self.name}: " if self.name else ""
        self.node.get_logger().info(
            f"{head}thermal camera paused ({what}; shutter / flat-field correction?): {action}"
        )

    # ------------------------------------------------------------------ worker side

    def error(self, reason: str, text: str, now: float) -> None:
        """Count an error of this head and log it (throttled per reason)."""
        line = self.stats.error(reason, text, now)
        if line is not None:
            head = f"head {self.name}: " if self.name else ""
            self.node.get_logger().error(head + line)

    def _convert(self, which: str, msg: Any, now: float) -> np.ndarray | None:
        try:
            if isinstance(msg, CompressedImage):
                return compressed_to_array(msg)
            return image_to_array(msg)
        except ImageConversionError as exc:
            self.error(f"{which}_conversion", f"{which} image skipped: {exc}", now)
            return None

    def prepare(self, thermal_msg: Any, rgb_msg: Any, now: float) -> Prepared | None:
        """Convert, check for a frozen thermal image, stretch and align one pair (worker
        thread); None when it is skipped (counted and, for errors, logged)."""
        settings = self._settings()
        head = settings.heads[self.name]
        rgb_stamp = stamp_to_ns(rgb_msg.header.stamp)
        thermal_stamp = stamp_to_ns(thermal_msg.header.stamp)
        if settings.max_age > 0:
            age = (self.node.get_clock().now().nanoseconds - rgb_stamp) / 1e9
            if age > settings.max_age:
                with self.stats.lock:
                    self.stats.drop("stale")
                return None
        if settings.freeze_action != "ignore" and not self._still_moving(
            thermal_msg, thermal_stamp, rgb_stamp, settings
        ):
            return None
        thermal = self._convert("thermal", thermal_msg, now)
        rgb = self._convert("rgb", rgb_msg, now)
        if thermal is None or rgb is None:
            return None
        rule, value_range = self._stretch(thermal, thermal_stamp, head)
        try:
            thermal = thermal_for_fusion(
                thermal, rgb.shape, head.alignment, rule, head.percentiles, value_range
            )
        except (AlignmentError, ValueError) as exc:
            self.error("alignment", f"pair skipped: {one_line(exc)}", now)
            return None
        return Prepared(self, rgb_msg.header, thermal, rgb)

    def _still_moving(
        self, thermal_msg: Any, thermal_stamp: int, rgb_stamp: int, settings: Settings
    ) -> bool:
        """Whether a pair may be fused as far as a frozen thermal camera goes (counted)."""
        since, pause = self.freeze.frame(bytes(thermal_msg.data), thermal_stamp)
        if pause is not None:
            self._log_pause(pause, settings)
        if since is None:
            return True
        held = settings.freeze_action == "hold" and rgb_stamp - since <= settings.freeze_max_age_ns
        with self.stats.lock:
            if held:
                self.stats.held += 1
            else:
                self.stats.drop("frozen")
        return held

    def _stretch(
        self, thermal: np.ndarray, stamp: int, head: HeadSettings
    ) -> tuple[str, tuple[float, float]]:
        """The thermal rule and range for this frame: with the percentile rule, 16-bit and
        float frames are stretched by a range that follows the scene over
        thermal.time_constant (so the image does not pump: rule fixed, that range)."""
        if thermal.dtype == np.uint8 or head.thermal_rule != "percentile" or thermal.ndim != 2:
            return head.thermal_rule, head.value_range
        with self._range_lock:
            if self._range.time_constant != head.time_constant:
                self._range = RangeFilter(head.time_constant)
            value_range = self._range.update(stamp, frame_range(thermal, head.percentiles))
        if value_range is None:  # a flat frame and no past: the percentile rule's zeros
            return head.thermal_rule, head.value_range
        return "fixed", value_range

    def publish(
        self,
        prepared: Prepared,
        luminance: np.ndarray,
        colour: np.ndarray | None,
        settings: Settings,
    ) -> None:
        """Publish a fused pair on this head's outputs (worker thread)."""
        depth = self._values["qos_depth"]
        header = prepared.header
        fused = fused_pixels(settings.output_encoding, luminance, colour)
        self.fused_pub.publish(_image(fused, settings.output_encoding, header))
        info = self.rgb_info
        if info is not None:
            height, width = fused.shape[:2]
            self.fused_info_pub.publish(fused_camera_info(info, header, width, height))
        if settings.publish_luminance:
            if self.luminance_pub is None:
                self.luminance_pub = self._publisher(Image, LUMINANCE_TOPIC, depth)
            self.luminance_pub.publish(_image(luminance, "mono8", header))
        if settings.publish_compressed:
            if self.compressed_pub is None:
                self.compressed_pub = self._publisher(
                    CompressedImage, FUSED_COMPRESSED_TOPIC, depth
                )
            # fused is RGB (or grey) whatever the encoding; the encoder stores it as BGR.
            text, data = array_to_compressed(
                fused, settings.publish_compressed, settings.jpeg_quality
            )
            self.compressed_pub.publish(
                CompressedImage(header=header, format=text, data=array.array("B", data))
            )


def _image(pixels: np.ndarray, encoding: str, header: Any) -> Image:
    fields = array_to_image_fields(pixels, encoding)
    # array.array is taken as is by the generated setter; bytes would be checked per byte.
    fields["data"] = array.array("B", fields["data"])
    return Image(header=header, **fields)
