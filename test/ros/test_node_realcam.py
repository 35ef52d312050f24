"""The node against real cameras' habits, over DDS: a thermal clock that lags, QoS overrides,
frozen thermal frames (shutter pauses), empty frame ids, fused/compressed, the stretch of
16-bit thermal over time, and several camera heads served by one node.

Expected images are computed here, independently of the node: the reference engine (fp32)
fed with 8-bit thermal images this module stretches and crops itself.
"""

from __future__ import annotations

import math
import os
import threading
import time
from typing import Any

import cv2
import numpy as np
import pytest
from node_harness import (
    DOMAIN_ID,
    FRAME,
    clip_pairs,
    pixels_of,
    raw_image,
    running_node,
    stamp,
)

from gifnet_ros.fusion.pairing import stamp_to_ns
from gifnet_ros.ros.client import FusionClient

pytestmark = [pytest.mark.dds, pytest.mark.distro, pytest.mark.shared]

LAG = 0.2
"""Seconds the (host-stamped) thermal camera of the first node lags its RGB camera."""
FREEZE_TIMEOUT = 0.5
TIME_CONSTANT = 0.4
QUIET = 4.0
"""Seconds a test waits to be sure that the node published nothing for a pair."""


def _namespace(name: str) -> str:
    return f"/gifnet_test_{os.getpid()}_{name}"  # as running_node names it


@pytest.fixture(scope="module")
def pairs(data_dir):
    return clip_pairs(data_dir, 6)


@pytest.fixture(scope="module")
def node(tmp_path_factory, weights_path):
    parameters = {
        "device": "cpu",
        "sync.backend": "auto",  # message_filters where installed
        "diagnostics_period": 0.3,
        "weights": str(weights_path),
        "sync.thermal_offset": -LAG,
        "thermal.freeze_action": "skip",
        "thermal.freeze_timeout": FREEZE_TIMEOUT,
        "thermal.time_constant": TIME_CONSTANT,
        "publish_compressed": "png",
        f"qos_overrides.{_namespace('realcam')}/fused/image.publisher.durability": (
            "transient_local"
        ),
    }
    with running_node(tmp_path_factory.mktemp("realcam"), "realcam", parameters, None) as running:
        yield running


class Extra:
    """Subscribers and publishers of one test with QoS of its choosing, on the client's node
    (spun by its executor thread)."""

    def __init__(self, client: FusionClient) -> None:
        self.client = client
        self.received: dict[str, list[Any]] = {}
        self._lock = threading.Lock()

    def subscribe(self, kind: Any, topic: str, qos: Any) -> None:
        self.received[topic] = []

        def keep(msg: Any) -> None:
            with self._lock:
                self.received[topic].append(msg)

        self.client.node.create_subscription(kind, topic, keep, qos)

    def got(self, topic: str, stamp_ns: int, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for msg in self.received[topic]:
                    if stamp_to_ns(msg.header.stamp) == stamp_ns:
                        return msg
            time.sleep(0.05)
        return None


def _lagging(thermal: np.ndarray, rgb: np.ndarray, rgb_stamp: int, lag: float = LAG):
    """The messages a host-stamped thermal camera and its RGB camera send for one instant."""
    return (
        raw_image(thermal, "mono8", rgb_stamp + round(lag * 1e9), FRAME["thermal"]),
        raw_image(rgb, "rgb8", rgb_stamp, FRAME["rgb"]),
    )


def _fused_or_none(node, msgs, timeout: float) -> Any:
    node.client.publish(*msgs)
    got = node.client.wait_fused(stamp_to_ns(msgs[1].header.stamp), timeout)
    return None if got is None else got[0]


def test_lagging_thermal_stamps_pair_after_the_offset(node, pairs, engine):
    thermal, rgb = pairs[0]
    node.client.wait_for_node(60)
    rgb_stamp = stamp()
    fused = node.fuse(*_lagging(thermal, rgb, rgb_stamp), timeout=90)
    np.testing.assert_array_equal(pixels_of(fused), engine.fuse(thermal, rgb))
    # Without the lag, the corrected thermal stamp is LAG before the RGB one: no pair.
    thermal, rgb = pairs[1]
    assert _fused_or_none(node, _lagging(thermal, rgb, stamp(), lag=0.0), QUIET) is None


def test_a_camera_lagging_beyond_the_offset_is_named_once(node, pairs):
    """Both cameras send, nothing pairs: the node says once by how much the thermal stamps
    miss the RGB ones (here 0.5 s late against the 0.2 s corrected, at 1.25 Hz so that the
    nearest stamps show the lag), and shows the gap in /diagnostics."""
    before = node.client.settled_counter("pairs")
    for k in range(4):
        thermal, rgb = pairs[k % 3]
        varied = np.clip(thermal.astype(int) + k, 0, 255).astype(np.uint8)
        node.client.publish(*_lagging(varied, rgb, stamp(), lag=0.5))
        time.sleep(0.8)
    line = "nothing pairs: the nearest thermal stamps are a median 0.300 s after the RGB ones"
    assert node.wait_log(line, 10.0), node.log()[-2000:]
    assert node.client.wait_diagnostics(
        lambda d: abs(float(d["unpaired_stamp_gap_s"]) - 0.3) < 0.01, 10.0
    ), node.client.diagnostics
    assert node.client.counter("pairs") == before
    time.sleep(1.0)  # more diagnostics periods: still one line
    assert node.log().count("nothing pairs") == 1


def test_qos_override_serves_a_transient_local_recorder(node, pairs):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    recorder = QoSProfile(
        depth=10,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )
    extra = Extra(node.client)
    extra.subscribe(Image, "fused/image", recorder)
    thermal, rgb = pairs[2]
    rgb_stamp = stamp()
    node.fuse(*_lagging(thermal, rgb, rgb_stamp))
    assert extra.got("fused/image", rgb_stamp, 20) is not None
    # The override made that publisher transient local; a topic without one stays volatile.
    client = node.client.node
    image_pub = client.get_publishers_info_by_topic(f"{node.namespace}/fused/image")
    info_pub = client.get_publishers_info_by_topic(f"{node.namespace}/fused/camera_info")
    assert [p.qos_profile.durability for p in image_pub] == [DurabilityPolicy.TRANSIENT_LOCAL]
    assert [p.qos_profile.durability for p in info_pub] == [DurabilityPolicy.VOLATILE]


def test_best_effort_publishers_are_fused(node, pairs, engine):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    best_effort = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
    publishers = [
        node.client.node.create_publisher(Image, topic, best_effort)
        for topic in ("thermal/image", "rgb/image")
    ]
    deadline = time.monotonic() + 20
    while any(p.get_subscription_count() == 0 for p in publishers):
        assert time.monotonic() < deadline, "the node never matched best-effort publishers"
        time.sleep(0.05)
    thermal, rgb = pairs[3]
    rgb_stamp = stamp()
    for publisher, msg in zip(publishers, _lagging(thermal, rgb, rgb_stamp), strict=True):
        publisher.publish(msg)
    got = node.client.wait_fused(rgb_stamp, 60)
    assert got is not None, node.log()[-2000:]
    np.testing.assert_array_equal(pixels_of(got[0]), engine.fuse(thermal, rgb))


def test_compressed_output_decodes_to_the_fused_image(node, pairs):
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import CompressedImage

    extra = Extra(node.client)
    extra.subscribe(CompressedImage, "fused/image/compressed", QoSProfile(depth=10))
    thermal, rgb = pairs[4]
    rgb_stamp = stamp()
    fused = node.fuse(*_lagging(thermal, rgb, rgb_stamp))
    compressed = extra.got("fused/image/compressed", rgb_stamp, 20)
    assert compressed is not None, node.log()[-2000:]
    assert compressed.format.endswith("png compressed bgr8"), compressed.format
    bgr = cv2.imdecode(np.frombuffer(bytes(compressed.data), np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(bgr[..., ::-1], pixels_of(fused))  # PNG: lossless


def test_frozen_thermal_frames_are_skipped_and_held(node, pairs, engine):
    """A driver repeating the last thermal frame (shutter closed): the pairs are skipped, one
    log line for the pause; a new frame ends it; with hold, a repeat is fused."""
    thermal, rgb = pairs[5]
    start = node.client.settled_diagnostics()
    pauses = int(start["frozen.pauses"])
    frozen = int(start.get("dropped.frozen", 0))
    first = stamp()
    node.fuse(*_lagging(thermal, rgb, first))
    for k in (1, 2):  # the same thermal pixels again, new stamps: frozen
        later = first + k * 100_000_000
        assert _fused_or_none(node, _lagging(thermal, pairs[k][1], later), 2.0) is None
    node.diagnostics_after("dropped.frozen", frozen + 2)
    assert int(node.client.diagnostics["frozen.pauses"]) == pauses + 1
    assert node.log().count("thermal camera paused (the same thermal image again") == 1
    moving, rgb2 = pairs[0]
    node.fuse(*_lagging(moving, rgb2, first + 300_000_000))  # a new frame: moving again

    node.client.set_parameters({"thermal.freeze_action": "hold"})
    held_before = node.client.counter("frozen.held")
    repeat = first + 400_000_000  # 0.1 s after the frame first came: within freeze_max_age
    fused = node.fuse(*_lagging(moving, pairs[3][1], repeat))
    np.testing.assert_array_equal(pixels_of(fused), engine.fuse(moving, pairs[3][1]))
    node.diagnostics_after("frozen.held", held_before + 1)
    assert node.log().count("thermal camera paused") == 2
    node.client.set_parameters({"thermal.freeze_action": "skip"})


def test_silent_thermal_camera_is_held_then_given_up(node, pairs, engine):
    """No thermal frame at all while RGB goes on: with hold, RGB frames are fused with the
    last thermal one while it is young enough (freeze_max_age 1 s here), then skipped."""
    node.client.set_parameters({"thermal.freeze_action": "hold", "thermal.freeze_max_age": 1.0})
    thermal, rgb = pairs[0]
    noisy = np.clip(thermal.astype(int) + 3, 0, 255).astype(np.uint8)  # not a repeat
    last = stamp()
    node.fuse(*_lagging(noisy, rgb, last))
    held_before = node.client.settled_diagnostics()["frozen.held"]
    rgb_later = last + round((FREEZE_TIMEOUT + 0.3) * 1e9)
    node.client.publish(None, raw_image(pairs[1][1], "rgb8", rgb_later, FRAME["rgb"]))
    got = node.client.wait_fused(rgb_later, 30)
    assert got is not None, node.log()[-2000:]
    np.testing.assert_array_equal(pixels_of(got[0]), engine.fuse(noisy, pairs[1][1]))
    node.diagnostics_after("frozen.held", int(held_before) + 1)
    assert "thermal camera paused (no thermal image for 0.5 s" in node.log()
    too_old = last + round(1.5e9)
    node.client.publish(None, raw_image(pairs[2][1], "rgb8", too_old, FRAME["rgb"]))
    assert node.client.wait_fused(too_old, QUIET) is None
    node.client.set_parameters({"thermal.freeze_action": "skip", "thermal.freeze_max_age": 3.0})


def test_empty_frame_id_is_said_once(node, pairs, engine):
    thermal, rgb = pairs[3]
    for k in range(2):
        varied = np.clip(thermal.astype(int) + 5 + k, 0, 255).astype(np.uint8)
        rgb_stamp = stamp()
        thermal_msg, rgb_msg = _lagging(varied, rgb, rgb_stamp)
        thermal_msg.header.frame_id = ""
        node.fuse(thermal_msg, rgb_msg)
    log = node.log()
    assert log.count("thermal images have an empty frame_id") == 1, log[-2000:]


def test_sixteen_bit_thermal_is_stretched_over_time(node, pairs, engine):
    """Two mono16 frames 0.1 s apart, the second with a hot object: the second is stretched
    by the first's range moved towards its own by 1 - exp(-0.1 / time_constant), not by its
    own range (which would darken the whole scene at once)."""
    grey, rgb = pairs[4]
    counts = grey.astype(np.uint16) * 8 + 7000
    hot = counts.copy()
    hot[10:20, 10:22] = 9500  # a hot object entering: 5 % of the pixels
    first = stamp()
    frames = ((counts, first), (hot, first + 100_000_000))
    own = [np.percentile(c.astype(np.float32), (1.0, 99.0)).astype(np.float64) for c, _ in frames]
    weight = 1.0 - math.exp(-0.1 / TIME_CONSTANT)
    ranges = [own[0], own[0] + weight * (own[1] - own[0])]
    for (image, rgb_stamp), (lo, hi) in zip(frames, ranges, strict=True):
        thermal_stamp = rgb_stamp + round(LAG * 1e9)  # the node's corrected stamp: rgb_stamp
        fused = node.fuse(
            raw_image(image, "mono16", thermal_stamp, FRAME["thermal"]),
            raw_image(rgb, "rgb8", rgb_stamp, FRAME["rgb"]),
        )
        # In float32, as the node maps 16-bit values (a grey level's rounding depends on it).
        scaled = (image.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
        stretched = np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)
        np.testing.assert_array_equal(pixels_of(fused), engine.fuse(stretched, rgb))


# ---------------------------------------------------------------------------- several heads

HEADS = ("front", "rear")
REAR_LAG = 0.1
REAR_CROP = (0, 0, 40, 30)


@pytest.fixture(scope="module")
def heads(tmp_path_factory, weights_path):
    parameters = {
        "device": "cpu",
        "sync.backend": "builtin",
        "diagnostics_period": 0.3,
        "weights": str(weights_path),
        "heads": list(HEADS),
        "rear.sync.thermal_offset": -REAR_LAG,
        "rear.align.crop": list(REAR_CROP),
    }
    with running_node(
        tmp_path_factory.mktemp("heads"), "heads", parameters, None, head=HEADS[0]
    ) as running:
        rear = FusionClient(running.namespace, head=HEADS[1], domain_id=DOMAIN_ID)
        try:
            rear.wait_for_node(60, running.process)
            yield running, {HEADS[0]: running.client, HEADS[1]: rear}
        finally:
            rear.close()


def _rear_expected(thermal: np.ndarray) -> np.ndarray:
    x, y, w, h = REAR_CROP
    crop = np.ascontiguousarray(thermal[y : y + h, x : x + w])
    return cv2.resize(crop, (thermal.shape[1], thermal.shape[0]), interpolation=cv2.INTER_LINEAR)


def test_each_head_fuses_its_own_cameras(heads, pairs, engine):
    running, clients = heads
    for k in range(2):
        (t_front, r_front), (t_rear, r_rear) = pairs[k], pairs[k + 2]
        now = stamp()
        clients["front"].publish(*_lagging(t_front, r_front, now, lag=0.0))
        clients["rear"].publish(*_lagging(t_rear, r_rear, now, lag=REAR_LAG))
        front = clients["front"].wait_fused(now, 90)
        rear = clients["rear"].wait_fused(now, 90)
        assert front is not None and rear is not None, running.log()[-3000:]
        np.testing.assert_array_equal(pixels_of(front[0]), engine.fuse(t_front, r_front))
        np.testing.assert_array_equal(
            pixels_of(rear[0]), engine.fuse(_rear_expected(t_rear), r_rear)
        )
    for head, client in clients.items():
        assert client.wait_diagnostics(lambda d: int(d.get("fused", 0)) >= 2, 20), head
        assert client.diagnostics["heads"] == "2"


def test_a_head_with_bad_data_does_not_stop_the_other(heads, pairs, engine):
    running, clients = heads
    rear_errors = clients["rear"].counter("errors.thermal_conversion")
    front_before = clients["front"].settled_counter("fused")
    for k in range(3):
        now = stamp()
        bad = raw_image(pairs[k][0], "mono8", now + round(REAR_LAG * 1e9), FRAME["thermal"])
        bad.encoding = "no_such_encoding"
        clients["rear"].publish(bad, raw_image(pairs[k][1], "rgb8", now, FRAME["rgb"]))
        thermal, rgb = pairs[k + 3]
        clients["front"].publish(*_lagging(thermal, rgb, now, lag=0.0))
        got = clients["front"].wait_fused(now, 60)
        assert got is not None, running.log()[-3000:]
        np.testing.assert_array_equal(pixels_of(got[0]), engine.fuse(thermal, rgb))
    assert clients["front"].wait_diagnostics(lambda d: int(d["fused"]) >= front_before + 3, 20)
    assert clients["rear"].wait_diagnostics(
        lambda d: int(d.get("errors.thermal_conversion", 0)) >= rear_errors + 3, 20
    )


def test_a_driver_without_stamps_is_fused_and_said_once(heads, pairs, engine):
    """A driver that sends stamp 0 on both cameras: the node fuses and says so once per input."""
    running, clients = heads
    for k in range(2):
        thermal, rgb = pairs[k]
        fused = running.fuse(*_lagging(thermal, rgb, 0, lag=0.0))
        np.testing.assert_array_equal(pixels_of(fused), engine.fuse(thermal, rgb))
        clients["front"].fused.clear()  # the next one has the same stamp
    log = running.log()
    assert log.count("head front: rgb images carry no stamp (0)") == 1, log[-3000:]
    assert log.count("head front: thermal images carry no stamp (0)") == 1
