"""What the live-node tests share: a private DDS setup, a node process, hand-built messages.

Each test module runs one real node process (module-scoped fixture) and talks to it over DDS
from this process through :class:`gifnet_ros.ros.client.FusionClient`. Isolation from other tests
and from anything else on the machine: one random ``ROS_DOMAIN_ID`` per test session,
discovery limited to this host, and a namespace per module.

Messages are built here by hand with numpy (byte order, row padding, channel order), not with
``gifnet_ros.fusion.conversion``, so the node's conversion is checked against an independent
encoding of each format.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gifnet_ros.fusion.pairing import stamp_to_ns
from gifnet_ros.offline.sources import m3svd_pairs
from gifnet_ros.ros.client import FusionClient
from gifnet_ros.ros.node_process import start_node, stop_node

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "fusion.yaml"
EXACT = {"precision": "fp32", "thermal.freeze_action": "ignore"}
"""What the node runs unless a test says otherwise: the exact mode of the reference engine
(conftest's ``engine``) that fused images are compared with (the default ``auto`` may pick
bf16), and fusing every pair as received: the tests send the same few images again and
again, which the default ``thermal.freeze_action`` skips as a frozen camera
(test_node_freeze.py tests that)."""
FAULT_NODE = Path(__file__).with_name("fault_node.py")
"""The node with a fault injector (see that file), for ``running_node(script=...)``."""
DOMAIN_ID = random.SystemRandom().randint(1, 100)
"""One domain per test session, so parallel test runs on one machine do not see each other."""
SIZE = (64, 48)  # width, height: big enough for GIFNet's 8x8 minimum, ~0.3-1 s per pair on CPU
STARTUP_TIMEOUT = 90.0
FUSE_TIMEOUT = 60.0
EXIT_TIMEOUT = 20.0
"""Seconds a node may take to exit after SIGINT before it counts as hung. Generous on purpose:
a stuck thread hangs for good, while a clean exit's interpreter teardown (torch, DDS) takes
seconds on a loaded two-core machine; speed is for benchmarks/, not tests."""
FRAME = {"thermal": "thermal_camera", "rgb": "rgb_camera"}


def dds_env(log_dir: Path) -> dict[str, str]:
    """Environment for this process and the node: private domain, local discovery, big data.

    ``ROS_PYTHON_CHECK_FIELDS=1`` makes newer rclpy check message fields on construction as
    Humble always does, so a misspelt field fails here too.
    """
    env = {
        "ROS_DOMAIN_ID": str(DOMAIN_ID),
        "FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA",
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",  # Iron and newer
        "ROS_PYTHON_CHECK_FIELDS": "1",
        "ROS_LOG_DIR": str(log_dir),
    }
    if os.environ.get("ROS_DISTRO") == "humble":
        env["ROS_LOCALHOST_ONLY"] = "1"  # Humble's spelling (deprecated later, hence only here)
    return env


def stamp(seconds_from_now: float = 0.0) -> int:
    return time.time_ns() + round(seconds_from_now * 1e9)


def time_msg(stamp_ns: int) -> Any:
    from builtin_interfaces.msg import Time

    return Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


_BYTES_PER_CHANNEL = {"8": 1, "16": 2, "32F": 4}


def raw_image(
    pixels: np.ndarray,
    encoding: str,
    stamp_ns: int,
    frame_id: str,
    *,
    big_endian: bool = False,
    pad: int = 0,
) -> Any:
    """A ``sensor_msgs/Image`` encoded by hand: ``pixels`` are stored as given (the caller
    orders channels for the encoding), in the requested byte order, with ``pad`` bytes of
    padding after every row."""
    from sensor_msgs.msg import Image

    height, width = pixels.shape[:2]
    order = ">" if big_endian else "<"
    stored = pixels.astype(pixels.dtype.newbyteorder(order)).reshape(height, -1).view(np.uint8)
    rows = np.zeros((height, stored.shape[1] + pad), np.uint8)
    rows[:, : stored.shape[1]] = stored
    msg = Image(
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(big_endian),
        step=rows.shape[1],
    )
    msg.data = rows.tobytes()
    msg.header.stamp = time_msg(stamp_ns)
    msg.header.frame_id = frame_id
    return msg


def compressed_image(data: bytes, fmt: str, stamp_ns: int, frame_id: str) -> Any:
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage(format=fmt)
    msg.data = data
    msg.header.stamp = time_msg(stamp_ns)
    msg.header.frame_id = frame_id
    return msg


def mono8_pair(pair: tuple[np.ndarray, np.ndarray], stamp_ns: int) -> tuple[Any, Any]:
    """The common case: mono8 thermal + rgb8 RGB, both with ``stamp_ns``."""
    return (
        raw_image(pair[0], "mono8", stamp_ns, FRAME["thermal"]),
        raw_image(pair[1], "rgb8", stamp_ns, FRAME["rgb"]),
    )


def pixels_of(msg: Any) -> np.ndarray:
    """Decode a fused image by hand (the node publishes unpadded little-endian rows)."""
    channels = {"rgb8": 3, "bgr8": 3, "mono8": 1}[msg.encoding]
    assert msg.step == msg.width * channels, f"unexpected step {msg.step} for {msg.encoding}"
    data = np.frombuffer(bytes(msg.data), np.uint8)
    shape = (msg.height, msg.width, channels) if channels == 3 else (msg.height, msg.width)
    return data.reshape(shape)


@dataclass
class RunningNode:
    """A node process with its client; ``log()`` is the node's console output so far."""

    process: Any
    client: FusionClient
    log_path: Path
    namespace: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            time.sleep(0.1)
        return False

    def fuse(self, thermal_msg: Any, rgb_msg: Any, timeout: float = FUSE_TIMEOUT) -> Any:
        """Publish one pair and return the fused message for its RGB stamp (fails if none)."""
        self.client.publish(thermal_msg, rgb_msg)
        key = stamp_to_ns(rgb_msg.header.stamp)
        got = self.client.wait_fused(key, timeout)
        assert got is not None, f"no fused image for stamp {key}; node log:\n{self.log()[-3000:]}"
        return got[0]

    def diagnostics_after(self, key: str, at_least: int, timeout: float = 20.0) -> dict[str, str]:
        """Diagnostics once counter ``key`` has reached ``at_least`` (fails on timeout)."""
        ok = self.client.wait_diagnostics(lambda d: int(d.get(key, 0)) >= at_least, timeout)
        assert ok, f"diagnostics {key} never reached {at_least}: {self.client.diagnostics}"
        return dict(self.client.diagnostics)


@contextmanager
def running_node(
    tmp: Path,
    name: str,
    parameters: dict[str, Any],
    warm_up: tuple[np.ndarray, np.ndarray] | None,
    *,
    transports: tuple[str, str] = ("raw", "raw"),
    script: Path | None = None,
    head: str = "",
) -> Iterator[RunningNode]:
    """Start the node (config/fusion.yaml, :data:`EXACT`, then ``parameters``) and a client;
    stop both after.

    The client waits for discovery and gets the ``warm_up`` pair through (sent as the
    transports say), so every test starts with a node that is known to fuse. ``script`` runs
    a test-side launcher of the node instead (``FAULT_NODE``). ``head``: the client talks to
    that camera head of a several-head node.
    """
    namespace = f"/gifnet_test_{os.getpid()}_{name}"
    with pytest.MonkeyPatch.context() as patch:
        for key, value in dds_env(tmp).items():
            patch.setenv(key, value)
        log_path = tmp / f"{name}.log"
        process = start_node(
            namespace, {**EXACT, **parameters}, log_path, params_files=[CONFIG], script=script
        )
        client = None
        try:
            client = FusionClient(namespace, transports=transports, domain_id=DOMAIN_ID, head=head)
            client.wait_for_node(STARTUP_TIMEOUT, process)
            if warm_up is not None:
                client.warm_up(warm_up, STARTUP_TIMEOUT, fmt="png")
            yield RunningNode(process, client, log_path, namespace)
        finally:
            if client is not None:
                client.close()
            stop_node(process)


def clip_pairs(data_dir: Path, frames: int, size: tuple[int, int] = SIZE) -> list:
    """Frames of the shared M3SVD clip, resized small, as (grey thermal, RGB) pairs."""
    return m3svd_pairs("0111_1716", frames, size, every=25, shared=data_dir.parent)
