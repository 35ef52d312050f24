"""``gifnet-demo``: the live node, end to end, on a fresh machine.

It starts the real fusion node in its own process, plays a synchronized thermal/RGB stream into
it over DDS (by default frames of the M3SVD clip in ``../shared/data/m3svd``; or a rosbag2, or
two videos), receives the fused images, writes a few as PNG with a short report, and exits.
Everything goes through the same topics a robot would use, so a working demo means that the
node, the middleware and the model work together on this machine.

ROS domain: the demo keeps ``ROS_DOMAIN_ID`` as it is (so ``ros2 topic echo`` and rqt in the
same shell see it; pass ``--domain-id`` to move it) and puts the node and its topics under a
private namespace, ``/gifnet_demo_<pid>``, so it neither reads a robot's cameras nor publishes
into a robot's topics when run on the robot's default domain. ``FASTDDS_BUILTIN_TRANSPORTS`` is
set to ``LARGE_DATA`` unless already set: Fast DDS' default UDP transport fragments and loses
megabyte images.

The module also holds the pieces the tests and ``benchmarks/node_latency.py`` share with the
demo: :class:`FusionClient` (publishes pairs, collects fused images and diagnostics, calls the
node's parameter services), :func:`start_node` and the frame sources.
"""

from __future__ import annotations

import argparse
import array
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from gifnet_ros.fusion.image_files import write_bytes_atomic
from gifnet_ros.fusion.pairing import stamp_to_ns

FRAME_ID_THERMAL = "thermal_camera"
FRAME_ID_RGB = "rgb_camera"
ENV_SHARED = "GIFNET_SHARED"
DEFAULT_CLIP = "0111_1716"
NODE_NAME = "fusion_node"

Pair = tuple[np.ndarray, np.ndarray]


class DemoError(RuntimeError):
    """A problem the demo reports as its one error line (missing data, node failure...)."""


# ---------------------------------------------------------------------------- frame sources


def find_shared() -> Path | None:
    """The shared data folder: ``$GIFNET_SHARED``, else ``shared`` next to the checkout/cwd."""
    env = os.environ.get(ENV_SHARED, "").strip()
    if env:
        return Path(env).expanduser()
    for candidate in (
        Path.cwd().parent / "shared",
        Path.cwd() / "shared",
        Path(__file__).resolve().parents[3] / "shared",
    ):
        if (candidate / "data").is_dir():
            return candidate
    return None


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` -> (width, height); argparse type."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not WIDTHxHEIGHT") from None
    if width < 8 or height < 8:
        raise argparse.ArgumentTypeError(f"size {text!r}: GIFNet needs at least 8x8")
    return width, height


def resize_pair(thermal: np.ndarray, rgb: np.ndarray, size: tuple[int, int] | None) -> Pair:
    """Scale both images to ``size`` (width, height); area averaging keeps detail when shrinking."""
    if size is None:
        return thermal, rgb
    return (
        cv2.resize(thermal, size, interpolation=cv2.INTER_AREA),
        cv2.resize(rgb, size, interpolation=cv2.INTER_AREA),
    )


def video_pairs(
    thermal_video: Path,
    rgb_video: Path,
    frames: int,
    size: tuple[int, int] | None = None,
    every: int = 1,
) -> list[Pair]:
    """Frames 0, every, 2*every... of two frame-synchronous videos as (grey thermal, RGB) pairs.

    Read as ``gifnet-make-bag`` reads them: the thermal frame becomes ``mono8`` grey, as a
    thermal camera would send it, the visible one RGB.
    """
    from gifnet_ros.offline.bag_io import ToolError
    from gifnet_ros.offline.make_bag import rgb_pixels, source_pairs, thermal_pixels

    pairs: list[Pair] = []
    try:
        for index, (thermal, rgb) in enumerate(source_pairs(thermal_video, rgb_video)):
            if len(pairs) == frames:
                break
            if index % every == 0:
                pairs.append(resize_pair(thermal_pixels(thermal, "mono8"), rgb_pixels(rgb), size))
    except ToolError as exc:
        raise DemoError(str(exc)) from None
    if not pairs:
        raise DemoError(f"no frames could be read from {thermal_video} and {rgb_video}")
    return pairs


def m3svd_pairs(
    clip: str, frames: int, size: tuple[int, int] | None, every: int, shared: Path | None = None
) -> list[Pair]:
    """Pairs from the shared M3SVD clip ``clip`` (infrared/ and visible/ videos)."""
    shared = find_shared() if shared is None else shared
    if shared is None:
        raise DemoError(
            f"shared data not found (set ${ENV_SHARED}, or pass --thermal-video/--rgb-video "
            "or --bag)"
        )
    base = shared / "data" / "m3svd"
    thermal, rgb = base / "infrared" / f"{clip}.mp4", base / "visible" / f"{clip}.mp4"
    for path in (thermal, rgb):
        if not path.is_file():
            raise DemoError(f"M3SVD video {path} not found")
    return video_pairs(thermal, rgb, frames, size, every)


def bag_pairs(
    bag: Path,
    thermal_topic: str,
    rgb_topic: str,
    frames: int,
    size: tuple[int, int] | None,
    slop: float = 0.05,
) -> list[Pair]:
    """The first ``frames`` stamp-matched pairs of a rosbag2 (Image or CompressedImage topics)."""
    from rosbags.highlevel import AnyReader

    from gifnet_ros.fusion.conversion import (
        ImageConversionError,
        compressed_to_array,
        image_to_array,
    )
    from gifnet_ros.fusion.pairing import pair_by_stamp
    from gifnet_ros.offline.bag_io import typestore

    topics = (thermal_topic, rgb_topic)

    def read(keep: dict[str, set[int]] | None) -> dict[str, dict[int, Any]]:
        """Per topic, index in recording order -> without ``keep`` every message's stamp, with
        it only the messages at those indices, so a long recording never sits in memory."""
        found: dict[str, dict[int, Any]] = {topic: {} for topic in topics}
        try:
            with AnyReader([bag], default_typestore=typestore()) as reader:
                connections = [c for c in reader.connections if c.topic in found]
                missing = set(topics) - {c.topic for c in connections}
                if missing:
                    present = sorted({c.topic for c in reader.connections})
                    raise DemoError(f"bag {bag} lacks topic(s) {sorted(missing)}; it has {present}")
                seen = dict.fromkeys(topics, 0)
                for connection, _, raw in reader.messages(connections=connections):
                    topic, index = connection.topic, seen[connection.topic]
                    seen[topic] += 1
                    if keep is None:
                        msg = reader.deserialize(raw, connection.msgtype)
                        found[topic][index] = stamp_to_ns(msg.header.stamp)
                    elif index in keep[topic]:
                        found[topic][index] = reader.deserialize(raw, connection.msgtype)
        except DemoError:
            raise
        except Exception as exc:  # rosbags raises several types for unreadable bags
            raise DemoError(f"cannot read bag {bag}: {exc}") from None
        return found

    stamps = read(None)
    rgb_stamps, thermal_stamps = (
        list(stamps[topic].values()) for topic in (rgb_topic, thermal_topic)
    )
    chosen = pair_by_stamp(thermal_stamps, rgb_stamps, round(slop * 1e9)).pairs[:frames]
    msgs = read({thermal_topic: {t for t, _ in chosen}, rgb_topic: {r for _, r in chosen}})
    pairs: list[Pair] = []
    for thermal_index, rgb_index in chosen:
        arrays = []
        for msg in (msgs[thermal_topic][thermal_index], msgs[rgb_topic][rgb_index]):
            convert = compressed_to_array if hasattr(msg, "format") else image_to_array
            try:
                arrays.append(convert(msg))
            except ImageConversionError as exc:
                raise DemoError(f"bag {bag}: {exc}") from None
        pairs.append(resize_pair(arrays[0], arrays[1], size))
    if not pairs:
        raise DemoError(f"bag {bag}: no {thermal_topic}/{rgb_topic} pairs within {slop} s")
    return pairs


# ---------------------------------------------------------------------------- messages


def _time_msg(stamp_ns: int) -> Any:
    from builtin_interfaces.msg import Time

    return Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


def encoding_for(array_: np.ndarray) -> str:
    """The ROS encoding the demo sends an array as (RGB order for colour)."""
    if array_.ndim == 3:
        return "rgb8"
    return {np.uint8: "mono8", np.uint16: "mono16", np.float32: "32FC1"}[array_.dtype.type]


def image_msg(pixels: np.ndarray, stamp_ns: int, frame_id: str, encoding: str | None = None) -> Any:
    """A ``sensor_msgs/Image`` carrying ``pixels`` (conventions of gifnet_ros.fusion.conversion)."""
    from sensor_msgs.msg import Image

    from gifnet_ros.fusion.conversion import array_to_image_fields

    fields = array_to_image_fields(pixels, encoding or encoding_for(pixels))
    fields["data"] = array.array("B", fields["data"])  # skips the generated per-byte check
    msg = Image(**fields)
    msg.header.stamp = _time_msg(stamp_ns)
    msg.header.frame_id = frame_id
    return msg


def compressed_msg(pixels: np.ndarray, stamp_ns: int, frame_id: str, fmt: str = "jpeg") -> Any:
    """A ``sensor_msgs/CompressedImage`` as image_transport's compressed plugin would send."""
    from sensor_msgs.msg import CompressedImage

    from gifnet_ros.fusion.conversion import array_to_compressed

    text, data = array_to_compressed(pixels, fmt)
    msg = CompressedImage(format=text, data=array.array("B", data))
    msg.header.stamp = _time_msg(stamp_ns)
    msg.header.frame_id = frame_id
    return msg


# ---------------------------------------------------------------------------- node process


def dds_environment(domain_id: int | None = None) -> None:
    """Set the DDS variables the node and its peers need in this process (and its children)."""
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    if domain_id is not None:
        os.environ["ROS_DOMAIN_ID"] = str(domain_id)


def start_node(
    namespace: str,
    parameters: dict[str, Any],
    log_path: Path,
    *,
    params_files: Sequence[Path] = (),
    env: dict[str, str] | None = None,
    lifecycle: bool = False,
    script: Path | None = None,
) -> subprocess.Popen:
    """Start ``python -m gifnet_ros.ros.node`` in ``namespace`` with its output in ``log_path``.

    ``lifecycle`` starts the managed node (unconfigured until told over its lifecycle services).
    ``script`` runs that Python file instead of the module, with the same arguments (tests:
    ``test/fault_node.py``, the node with a fault injector).

    ``parameters`` go through a params file written next to the log (a command-line ``-p``
    would re-type values: ``1`` becomes an integer, an empty string nothing at all); files in
    ``params_files`` are applied first, so ``parameters`` override them.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    overrides = log_path.with_suffix(".params.yaml")
    overrides.write_text(yaml.safe_dump({"/**": {"ros__parameters": parameters}}))
    program = [str(script)] if script is not None else ["-m", "gifnet_ros.ros.node"]
    command = [sys.executable, *program, *(["--lifecycle"] if lifecycle else [])]
    command += ["--ros-args", "-r", f"__ns:={namespace}"]
    for path in [*params_files, overrides]:
        command += ["--params-file", str(path)]
    child_env = dict(os.environ if env is None else env)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    child_env.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "0")
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=child_env)


def stop_node(process: subprocess.Popen, timeout: float = 10.0) -> int | None:
    """SIGINT (what Ctrl-C and ros2 launch send), then SIGKILL; returns the SIGINT exit code.

    None means the node did not exit within ``timeout`` of SIGINT and had to be killed.
    """
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


# ---------------------------------------------------------------------------- client


class FusionClient:
    """The other side of the node: a publisher of pairs and a subscriber of its outputs.

    Runs its own rclpy context and executor thread, so tests and tools can use it next to
    other rclpy code in one process. Fused images are kept by RGB stamp; diagnostics of the
    target node are kept as the latest ``{key: value}``, with a count of statuses received.
    With ``on_fused(msg, received_ns)`` fused images are handed to it instead of kept (a soak
    run receives gigabytes).
    """

    def __init__(
        self,
        namespace: str,
        *,
        target: str = NODE_NAME,
        transports: tuple[str, str] = ("raw", "raw"),
        topics: tuple[str, str] = ("thermal/image", "rgb/image"),
        domain_id: int | None = None,
        on_fused: Callable[[Any, int], None] | None = None,
        head: str = "",
    ) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rcl_interfaces.srv import GetParameters, SetParameters
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile
        from sensor_msgs.msg import CompressedImage, Image

        self._fused_hook = on_fused
        self._context = Context()
        rclpy.init(context=self._context, domain_id=domain_id)
        ns = namespace.rstrip("/")
        # A head of a several-head node: its topics are in the head's namespace, under the
        # node's; the parameter services stay the node's.
        self.node = rclpy.create_node(
            f"gifnet_client_{os.getpid()}_{head}".rstrip("_"),
            namespace=f"{ns}/{head}" if head else ns or "/",
            context=self._context,
        )
        qos = QoSProfile(depth=10)
        self.transports = transports
        self._publishers = []
        for base, transport in zip(topics, transports, strict=True):
            kind, topic = (
                (CompressedImage, base + "/compressed")
                if transport == "compressed"
                else (Image, base)
            )
            self._publishers.append(self.node.create_publisher(kind, topic, qos))
        self._lock = threading.Condition()
        self.fused: dict[int, tuple[Any, int]] = {}
        self.luminance: dict[int, Any] = {}
        self.diagnostics: dict[str, str] = {}
        self.diagnostics_count = 0
        self._status_name = f"{target}: fusion" + (f" {head}" if head else "")
        self._fused_sub = self.node.create_subscription(Image, "fused/image", self._on_fused, qos)
        self.node.create_subscription(Image, "fused/luminance", self._on_luminance, qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, qos)
        service = f"{ns}/{target}"
        self._service_base = service
        self._service_clients: dict[str, Any] = {}
        self._set_client = self.node.create_client(SetParameters, f"{service}/set_parameters")
        self._get_client = self.node.create_client(GetParameters, f"{service}/get_parameters")
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self.node)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._spin, name="fusion-client", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._closed.is_set() and self._context.ok():
            self._executor.spin_once(timeout_sec=0.05)

    def _on_fused(self, msg: Any) -> None:
        received = time.time_ns()
        if self._fused_hook is not None:  # long runs: the caller keeps what it needs
            self._fused_hook(msg, received)
            return
        with self._lock:
            self.fused[stamp_to_ns(msg.header.stamp)] = (msg, received)
            self._lock.notify_all()

    def _on_luminance(self, msg: Any) -> None:
        with self._lock:
            self.luminance[stamp_to_ns(msg.header.stamp)] = msg
            self._lock.notify_all()

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.name == self._status_name:
                with self._lock:
                    self.diagnostics = {kv.key: kv.value for kv in status.values}
                    self.diagnostics_count += 1
                    self._lock.notify_all()

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` (evaluated under the client's lock) holds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 0.1))
        return True

    def wait_for_node(self, timeout: float, process: subprocess.Popen | None = None) -> None:
        """Until the node's subscriptions, publisher and parameter service are discovered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise DemoError(f"the fusion node exited with code {process.returncode}")
            if (
                all(pub.get_subscription_count() > 0 for pub in self._publishers)
                and self.node.count_publishers(self._fused_sub.topic_name) > 0
                and self._set_client.service_is_ready()
            ):
                return
            time.sleep(0.05)
        raise DemoError(f"the fusion node did not appear within {timeout:.0f} s")

    def publish(self, thermal_msg: Any | None, rgb_msg: Any | None) -> None:
        """Publish prepared messages, thermal first; None skips that input."""
        for publisher, msg in zip(self._publishers, (thermal_msg, rgb_msg), strict=True):
            if msg is not None:
                publisher.publish(msg)

    def publish_pair(self, pair: Pair, stamp_ns: int | None = None, fmt: str = "jpeg") -> int:
        """Publish both images with one stamp (now by default); returns the stamp.

        Inputs whose transport is ``compressed`` are encoded as ``fmt`` (jpeg or png).
        """
        stamp = time.time_ns() if stamp_ns is None else stamp_ns
        msgs = [
            compressed_msg(pixels, stamp, frame, fmt)
            if transport == "compressed"
            else image_msg(pixels, stamp, frame)
            for pixels, frame, transport in zip(
                pair, (FRAME_ID_THERMAL, FRAME_ID_RGB), self.transports, strict=True
            )
        ]
        self.publish(*msgs)
        return stamp

    def wait_fused(self, stamp_ns: int, timeout: float) -> tuple[Any, int] | None:
        """The fused image (and its receive time, ns) for an RGB stamp, or None on timeout."""
        if self.wait_until(lambda: stamp_ns in self.fused, timeout):
            with self._lock:
                return self.fused[stamp_ns]
        return None

    def counter(self, key: str) -> int:
        """An integer counter from the latest diagnostics (0 before the first)."""
        with self._lock:
            return int(self.diagnostics.get(key, 0))

    def settled_diagnostics(self, timeout: float = 20.0) -> dict[str, str]:
        """The node's counters from a status built after this call (a baseline to count from).

        The latest status can be up to one diagnostics period old, so a baseline taken from it
        can miss a pair the node finished just before and count that pair as new later. The
        second status published after the call was certainly built after it.
        """
        with self._lock:
            start = self.diagnostics_count
        if not self.wait_until(lambda: self.diagnostics_count >= start + 2, timeout):
            raise DemoError(f"no diagnostics from the fusion node within {timeout:.0f} s")
        with self._lock:
            return dict(self.diagnostics)

    def settled_counter(self, key: str) -> int:
        """An integer counter from a status built after this call (see settled_diagnostics)."""
        return int(self.settled_diagnostics().get(key, 0))

    def wait_diagnostics(self, predicate: Callable[[dict[str, str]], bool], timeout: float) -> bool:
        """Wait for a diagnostics status of the node for which ``predicate(values)`` holds."""
        return self.wait_until(lambda: predicate(self.diagnostics), timeout)

    def warm_up(self, pair: Pair, timeout: float, fmt: str = "jpeg") -> int:
        """Get one pair through, re-sending only while the node has not received one.

        Right after discovery a best-effort subscription can still miss the first messages;
        re-sending blindly would make the node drop pairs, so the node's own pair counter
        (from its diagnostics) decides. Returns the stamp of the pair that was fused.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            before = self.counter("pairs")
            stamp = self.publish_pair(pair, fmt=fmt)
            if self.wait_fused(stamp, 2.0) is not None:
                return stamp
            if self.wait_diagnostics(lambda d, b=before: int(d.get("pairs", 0)) > b, 3.0):
                remaining = max(0.0, deadline - time.monotonic())
                if self.wait_fused(stamp, remaining) is not None:
                    return stamp
        raise DemoError(f"no fused image within {timeout:.0f} s")

    def call(self, srv_type: Any, name: str, request: Any, timeout: float = 10.0) -> Any:
        """Call a service of the target node by its name relative to the node, e.g. ``get_state``
        (lifecycle_msgs) for a managed node; returns the response."""
        client = self._service_clients.get(name)
        if client is None:
            client = self.node.create_client(srv_type, f"{self._service_base}/{name}")
            self._service_clients[name] = client
        return self._call(client, request, timeout)

    def _call(self, client: Any, request: Any, timeout: float) -> Any:
        if not client.wait_for_service(timeout_sec=timeout):
            raise DemoError(f"service {client.srv_name} not available")
        future = client.call_async(request)
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout):
            raise DemoError(f"no reply from {client.srv_name} within {timeout} s")
        return future.result()

    def set_parameters(self, values: dict[str, Any], timeout: float = 10.0) -> list[Any]:
        """Set parameters one by one through the node's service; returns SetParametersResults."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request()
        request.parameters = [Parameter(n, value=v).to_parameter_msg() for n, v in values.items()]
        return list(self._call(self._set_client, request, timeout).results)

    def get_parameters(self, names: Iterable[str], timeout: float = 10.0) -> dict[str, Any]:
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        names = list(names)
        request = GetParameters.Request(names=names)
        reply = self._call(self._get_client, request, timeout)
        return {n: parameter_value_to_python(v) for n, v in zip(names, reply.values, strict=True)}

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5.0)
        self._executor.shutdown()
        self.node.destroy_node()
        self._context.try_shutdown()


# ---------------------------------------------------------------------------- the demo


def demo_weights(explicit: str | None) -> tuple[str, str]:
    """Weights for the node and where they came from (the engine's rules, then ../shared)."""
    from gifnet_ros.models.weights import WeightsError, resolve_weights

    try:
        return str(resolve_weights(explicit)), "default resolution"
    except WeightsError as exc:
        shared = find_shared()
        fallback = None if shared is None else shared / "gifnet" / "weights" / "Final.model"
        if explicit is None and fallback is not None and fallback.is_file():
            return str(fallback), "shared folder (no cached or $GIFNET_WEIGHTS checkpoint)"
        raise DemoError(str(exc)) from None


def _png(rgb_or_grey: np.ndarray) -> bytes:
    pixels = rgb_or_grey if rgb_or_grey.ndim == 2 else rgb_or_grey[..., ::-1]
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:
        raise DemoError("PNG encoding failed")
    return encoded.tobytes()


def _montage(thermal: np.ndarray, rgb: np.ndarray, fused: np.ndarray) -> np.ndarray:
    """thermal | RGB | fused side by side, all as RGB, for a quick look."""
    from gifnet_ros.fusion.thermal import normalize_thermal

    grey = normalize_thermal(thermal) if thermal.ndim == 2 else thermal
    panels = [grey if grey.ndim == 3 else np.repeat(grey[..., None], 3, axis=2), rgb, fused]
    if fused.ndim == 2:
        panels[2] = np.repeat(fused[..., None], 3, axis=2)
    return np.concatenate(panels, axis=1)


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p95": None}
    return {
        "median": round(float(np.median(values)), 4),
        "p95": round(float(np.percentile(values, 95)), 4),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gifnet-demo",
        description="Start the GIFNet fusion node, stream thermal/RGB pairs into it over DDS, "
        "save a few fused images as PNG and a report, and exit.",
    )
    source = parser.add_argument_group("input (default: the shared M3SVD clip)")
    source.add_argument(
        "--clip", default=DEFAULT_CLIP, help="M3SVD clip name (default %(default)s)"
    )
    source.add_argument("--thermal-video", type=Path, help="thermal video (with --rgb-video)")
    source.add_argument("--rgb-video", type=Path, help="RGB video, frame-synchronous")
    source.add_argument("--bag", type=Path, help="rosbag2 folder or file with both topics")
    source.add_argument("--thermal-topic", default="/thermal/image", help="thermal topic in --bag")
    source.add_argument("--rgb-topic", default="/rgb/image", help="RGB topic in --bag")
    parser.add_argument("--frames", type=int, default=6, help="pairs to send (default %(default)s)")
    parser.add_argument(
        "--every", type=int, default=15, help="use every Nth video frame (default %(default)s)"
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        default=(160, 120),
        help="resize both images to WxH before sending (default 160x120: GIFNet at 640x480 "
        "takes tens of seconds per pair on a laptop CPU)",
    )
    parser.add_argument(
        "--native", action="store_true", help="send the images at their own size (no --size)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="send at this many pairs/s and let the node drop what it cannot follow; "
        "default 0: send the next pair when the previous one came back",
    )
    parser.add_argument("--compressed", action="store_true", help="send JPEG CompressedImage")
    parser.add_argument(
        "--backend",
        default="auto",
        help="node backend: auto, torch, onnxruntime or classic_* (no weights) "
        "(default %(default)s: by hardware)",
    )
    parser.add_argument(
        "--network",
        default="gifnet",
        help="node network: gifnet, or tim / tim_light with the weights this project trained "
        "(not the authors') (default %(default)s)",
    )
    parser.add_argument("--device", default="auto", help="node device (default %(default)s)")
    parser.add_argument(
        "--precision", default="auto", help="node precision (default %(default)s: by hardware)"
    )
    parser.add_argument("--mode", default="thermal_rgb", help="fusion mode (default %(default)s)")
    parser.add_argument("--weights", help="checkpoint (default: gifnet-weights resolution)")
    parser.add_argument(
        "--out", type=Path, default=Path("gifnet_demo_out"), help="output folder (%(default)s)"
    )
    parser.add_argument("--save", type=int, default=4, help="fused PNGs to write (default 4)")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for one fused image"
    )
    parser.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID (default: unchanged)")
    parser.add_argument(
        "--namespace", help="namespace of the node and topics (default /gifnet_demo_<pid>)"
    )
    return parser


def _load_pairs(args: argparse.Namespace) -> tuple[list[Pair], str]:
    size = None if args.native else args.size
    if args.bag is not None:
        pairs = bag_pairs(args.bag, args.thermal_topic, args.rgb_topic, args.frames, size)
        return pairs, f"bag {args.bag} ({args.thermal_topic}, {args.rgb_topic})"
    if (args.thermal_video is None) != (args.rgb_video is None):
        raise DemoError("--thermal-video and --rgb-video go together")
    if args.thermal_video is not None:
        pairs = video_pairs(args.thermal_video, args.rgb_video, args.frames, size, args.every)
        return pairs, f"videos {args.thermal_video} + {args.rgb_video}"
    pairs = m3svd_pairs(args.clip, args.frames, size, args.every)
    return pairs, f"M3SVD clip {args.clip}"


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    """Run the demo; returns the report (also written to ``args.out``)."""
    dds_environment(args.domain_id)
    if args.backend.startswith("classic_"):
        weights, weights_source = "", f"none needed by backend {args.backend}"
    elif args.network != "gifnet":
        weights, weights_source = "", f"{args.network}: this project's TIM weights"
    else:
        weights, weights_source = demo_weights(args.weights)
    print(f"weights: {weights or '-'} ({weights_source})")
    pairs, source = _load_pairs(args)
    height, width = pairs[0][1].shape[:2]
    print(f"input: {len(pairs)} pairs of {width}x{height} from {source}")
    args.out.mkdir(parents=True, exist_ok=True)
    namespace = args.namespace or f"/gifnet_demo_{os.getpid()}"
    parameters = {
        "weights": weights,
        "network": args.network,
        "backend": args.backend,
        "device": args.device,
        "precision": args.precision,
        "mode": args.mode,
        "compressed": bool(args.compressed),
        "diagnostics_period": 0.5,
        "sync.queue_size": 30,
        # The warm-up sends the first pair, and the stream starts with it again: a repeated
        # thermal frame that the default would skip as a frozen camera.
        "thermal.freeze_action": "ignore",
    }
    log_path = args.out / "node.log"
    process = start_node(namespace, parameters, log_path)
    print(f"node: {namespace}/{NODE_NAME} (pid {process.pid}), log {log_path}")
    client = None
    try:
        transports = ("compressed", "compressed") if args.compressed else ("raw", "raw")
        client = FusionClient(namespace, transports=transports)
        client.wait_for_node(120.0, process)
        print("node is up; warming up with the first pair")
        client.warm_up(pairs[0], args.timeout)
        # Counters are reported relative to the first diagnostics that include the warm-up.
        client.wait_diagnostics(lambda d: int(d.get("fused", 0)) >= 1, 10.0)
        start_counts = dict(client.diagnostics)
        stamps: list[int] = []
        started = time.monotonic()
        for index, pair in enumerate(pairs):
            stamp = client.publish_pair(pair)
            stamps.append(stamp)
            if args.rate > 0:
                time.sleep(max(0.0, started + (index + 1) / args.rate - time.monotonic()))
            elif client.wait_fused(stamp, args.timeout) is None:
                print(f"pair {index}: no fused image within {args.timeout:.0f} s")
            print(f"pair {index + 1}/{len(pairs)} sent", end="\r", flush=True)
        print()
        client.wait_diagnostics(lambda d: _settled(d, start_counts, len(pairs)), args.timeout)
        elapsed = time.monotonic() - started
        return _report(args, client, pairs, stamps, start_counts, elapsed, weights, source)
    finally:
        if client is not None:
            client.close()
        code = stop_node(process)
        if code != 0:
            print(f"node exited with code {code}; see {log_path}")


def _delta(values: dict[str, str], start: dict[str, str], key: str) -> int:
    return int(values.get(key, 0)) - int(start.get(key, 0))


def _settled(values: dict[str, str], start: dict[str, str], sent: int) -> bool:
    """Every pair sent since ``start`` has been fused, dropped, or failed, per the node.

    A pair lost in transport never reaches the node's counters, so this can stay False: the
    caller waits with a timeout.
    """
    outcomes = ("fused", "dropped.replaced", "dropped.stale")
    errors = [k for k in values if k.startswith("errors.")]
    done = sum(_delta(values, start, key) for key in (*outcomes, *errors))
    return done >= sent


def _report(
    args: argparse.Namespace,
    client: FusionClient,
    pairs: list[Pair],
    stamps: list[int],
    start_counts: dict[str, str],
    elapsed: float,
    weights: str,
    source: str,
) -> dict[str, Any]:
    values = dict(client.diagnostics)

    def delta(key: str) -> int:
        return _delta(values, start_counts, key)

    latencies, saved = [], []
    for index, stamp in enumerate(stamps):
        got = client.fused.get(stamp)
        if got is None:
            continue
        msg, received = got
        latencies.append((received - stamp) / 1e9)
        if len(saved) < args.save:
            from gifnet_ros.fusion.conversion import image_to_array

            fused = image_to_array(msg)
            name = f"fused_{index:03d}.png"
            write_bytes_atomic(args.out / name, _png(fused))
            write_bytes_atomic(
                args.out / f"montage_{index:03d}.png", _png(_montage(*pairs[index], fused))
            )
            saved.append(name)
    height, width = pairs[0][1].shape[:2]
    report = {
        "source": source,
        "size": f"{width}x{height}",
        "device": values.get("device"),
        "network": values.get("network"),
        "backend": values.get("backend"),
        "precision": values.get("precision"),
        "mode": values.get("mode"),
        "weights": weights,
        "pairs_sent": len(stamps),
        "fused_received": len(latencies),
        "node": {
            "pairs": delta("pairs"),
            "fused": delta("fused"),
            "dropped": {k[8:]: delta(k) for k in values if k.startswith("dropped.")},
            "errors": {k[7:]: delta(k) for k in values if k.startswith("errors.")},
            "model_median_s": values.get("model_median_s"),
        },
        "latency_s": _stats(latencies),
        "seconds": round(elapsed, 2),
        "images": saved,
    }
    write_bytes_atomic(args.out / "report.json", (json.dumps(report, indent=2) + "\n").encode())
    text = _report_text(report)
    write_bytes_atomic(args.out / "report.txt", text.encode())
    return report


def _report_text(report: dict[str, Any]) -> str:
    node = report["node"]
    latency = report["latency_s"]

    def seconds(value: float | None) -> str:
        return (
            "n/a"
            if value is None or (isinstance(value, float) and math.isnan(value))
            else (f"{value:.3f} s")
        )

    lines = [
        f"GIFNet fusion node demo: {report['source']}, {report['size']}, "
        f"device {report['device']} {report['backend']} {report['precision']}, "
        f"mode {report['mode']}",
        f"pairs sent        {report['pairs_sent']}",
        f"fused received    {report['fused_received']}",
        f"node: pairs {node['pairs']}, fused {node['fused']}, dropped {node['dropped']}, "
        f"errors {node['errors']}",
        f"latency (RGB stamp -> fused received): median {seconds(latency['median'])}, "
        f"p95 {seconds(latency['p95'])}",
        f"model time per pair (node, median): {node['model_median_s']} s",
        f"images: {', '.join(report['images']) or 'none'}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Console script ``gifnet-demo``; 0 when at least one fused image came back."""
    args = _parser().parse_args(argv)
    if args.frames < 1:
        _parser().error("--frames must be >= 1")
    if args.every < 1:
        _parser().error("--every must be >= 1")
    try:
        report = run_demo(args)
    except DemoError as exc:
        print(f"gifnet-demo: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gifnet-demo: interrupted", file=sys.stderr)
        return 130
    print(_report_text(report), end="")
    print(f"written to {args.out.resolve()}")
    return 0 if report["fused_received"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
