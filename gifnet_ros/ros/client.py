"""The other side of the fusion node over DDS: publish thermal/RGB pairs, receive what it fuses.

``gifnet-demo`` streams its frames through :class:`FusionClient`, and the node tests and
benchmarks talk to a running node through it, so all of them exercise the topics, encodings
and parameter services a robot's own nodes would use. rclpy is imported when a client or a
message is made, so importing this module needs no ROS install.
"""

from __future__ import annotations

import array
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from gifnet_ros.fusion.pairing import stamp_to_ns

FRAME_ID_THERMAL = "thermal_camera"
FRAME_ID_RGB = "rgb_camera"
NODE_NAME = "fusion_node"  # gifnet_ros.ros.node.NODE_NAME; that module imports rclpy at load


class ClientError(RuntimeError):
    """The node did not appear, answer or fuse in time; the message says which (one line)."""


# ---------------------------------------------------------------------------- messages


def _time_msg(stamp_ns: int) -> Any:
    from rclpy.time import Time

    return Time(nanoseconds=stamp_ns).to_msg()


def encoding_for(array_: np.ndarray) -> str:
    """The ROS encoding an array is sent as (RGB order for colour)."""
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
                raise ClientError(f"the fusion node exited with code {process.returncode}")
            if (
                all(pub.get_subscription_count() > 0 for pub in self._publishers)
                and self.node.count_publishers(self._fused_sub.topic_name) > 0
                and self._set_client.service_is_ready()
            ):
                return
            time.sleep(0.05)
        raise ClientError(f"the fusion node did not appear within {timeout:.0f} s")

    def publish(self, thermal_msg: Any | None, rgb_msg: Any | None) -> None:
        """Publish prepared messages, thermal first; None skips that input."""
        for publisher, msg in zip(self._publishers, (thermal_msg, rgb_msg), strict=True):
            if msg is not None:
                publisher.publish(msg)

    def publish_pair(
        self, pair: tuple[np.ndarray, np.ndarray], stamp_ns: int | None = None, fmt: str = "jpeg"
    ) -> int:
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
            raise ClientError(f"no diagnostics from the fusion node within {timeout:.0f} s")
        with self._lock:
            return dict(self.diagnostics)

    def settled_counter(self, key: str) -> int:
        """An integer counter from a status built after this call (see settled_diagnostics)."""
        return int(self.settled_diagnostics().get(key, 0))

    def wait_diagnostics(self, predicate: Callable[[dict[str, str]], bool], timeout: float) -> bool:
        """Wait for a diagnostics status of the node for which ``predicate(values)`` holds."""
        return self.wait_until(lambda: predicate(self.diagnostics), timeout)

    def warm_up(
        self, pair: tuple[np.ndarray, np.ndarray], timeout: float, fmt: str = "jpeg"
    ) -> int:
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
        raise ClientError(f"no fused image within {timeout:.0f} s")

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
            raise ClientError(f"service {client.srv_name} not available")
        future = client.call_async(request)
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout):
            raise ClientError(f"no reply from {client.srv_name} within {timeout} s")
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
