"""The live node over DDS: fused output equals the engine's, every input encoding, bad input.

One node process for the module (config/fusion.yaml plus test overrides), fed from this
process. Pairing is the package's StampPairer (``sync.backend: builtin``), so this runs with
or without message_filters; test_node_sync.py covers the message_filters path.
"""

from __future__ import annotations

import numpy as np
import pytest
from node_harness import (
    FRAME,
    SIZE,
    clip_pairs,
    mono8_pair,
    pixels_of,
    raw_image,
    running_node,
    stamp,
)

from gifnet_ros.fusion.pairing import stamp_to_ns

pytestmark = [pytest.mark.dds, pytest.mark.distro, pytest.mark.shared]

PARAMETERS = {
    "device": "cpu",
    "sync.backend": "builtin",
    "diagnostics_period": 0.3,
    # Each encoding is compared with the engine's per-frame stretch of that frame alone; the
    # stretch over time (the default) is test_node_realcam.py's.
    "thermal.time_constant": 0.0,
}


@pytest.fixture(scope="module")
def pairs(data_dir):
    return clip_pairs(data_dir, 4)


@pytest.fixture(scope="module")
def node(tmp_path_factory, weights_path, pairs):
    with running_node(
        tmp_path_factory.mktemp("node"),
        "main",
        {**PARAMETERS, "weights": str(weights_path)},
        pairs[0],
    ) as running:
        yield running


def test_fused_images_equal_the_engine_and_carry_the_rgb_header(node, pairs, engine):
    for index, (thermal, rgb) in enumerate(pairs):
        now = stamp()
        thermal_msg = raw_image(thermal, "mono8", now, FRAME["thermal"])
        fused = node.fuse(thermal_msg, raw_image(rgb, "rgb8", now, f"rgb_camera_{index}"))
        assert stamp_to_ns(fused.header.stamp) == now
        assert fused.header.frame_id == f"rgb_camera_{index}"
        assert (fused.encoding, fused.width, fused.height) == ("rgb8", *SIZE)
        np.testing.assert_array_equal(pixels_of(fused), engine.fuse(thermal, rgb))


def test_offset_stamps_within_slop_are_paired_and_keep_the_rgb_stamp(node, pairs, engine):
    """Thermal 10 ms after RGB (sync.slop is 0.05 s): fused, stamped like the RGB image.

    The pairer emits a pair with a stamp difference once both streams have moved past it (a
    later message could be closer), so an RGB message 0.1 s later is sent after the pair.
    """
    thermal, rgb = pairs[1]
    rgb_stamp = stamp()
    node.client.publish(
        raw_image(thermal, "mono8", rgb_stamp + 10_000_000, FRAME["thermal"]),
        raw_image(rgb, "rgb8", rgb_stamp, FRAME["rgb"]),
    )
    node.client.publish(None, raw_image(rgb, "rgb8", rgb_stamp + 100_000_000, FRAME["rgb"]))
    got = node.client.wait_fused(rgb_stamp, 60)
    assert got is not None, node.log()[-2000:]
    assert got[0].header.frame_id == FRAME["rgb"]
    np.testing.assert_array_equal(pixels_of(got[0]), engine.fuse(thermal, rgb))


def _thermal_variants(grey: np.ndarray) -> dict[str, tuple[np.ndarray, str, dict]]:
    """Thermal data as cameras send it: (array, encoding, raw_image options) per case."""
    counts = grey.astype(np.uint16) * 40 + 7000  # radiometric counts in a narrow band
    kelvin = (273.15 + grey.astype(np.float32) / 6.0).astype(np.float32)
    return {
        "mono8": (grey, "mono8", {}),
        "8UC1": (grey, "8UC1", {}),
        "mono16": (counts, "mono16", {}),
        "16UC1": (counts, "16UC1", {}),
        "mono16-bigendian": (counts, "mono16", {"big_endian": True}),
        "32FC1-kelvin": (kelvin, "32FC1", {}),
        "32FC1-bigendian-padded": (kelvin, "32FC1", {"big_endian": True, "pad": 12}),
        "mono8-padded": (grey, "mono8", {"pad": 3}),
    }


@pytest.mark.parametrize("case", list(_thermal_variants(np.zeros((8, 8), np.uint8))))
def test_every_thermal_encoding(node, pairs, engine, case):
    grey, rgb = pairs[1]
    pixels, encoding, options = _thermal_variants(grey)[case]
    now = stamp()
    thermal_msg = raw_image(pixels, encoding, now, FRAME["thermal"], **options)
    fused = node.fuse(thermal_msg, raw_image(rgb, "rgb8", now, FRAME["rgb"]))
    # The engine normalises 16-bit/float thermal with the same defaults (percentile 1..99).
    np.testing.assert_array_equal(pixels_of(fused), engine.fuse(pixels, rgb))


@pytest.mark.parametrize(
    "encoding, store",
    [
        ("rgb8", lambda rgb: rgb),
        ("bgr8", lambda rgb: rgb[..., ::-1]),
        ("rgba8", lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])),
        ("bgra8", lambda rgb: np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 9, np.uint8)])),
    ],
)
def test_every_rgb_encoding(node, pairs, engine, encoding, store):
    thermal, rgb = pairs[2]
    now = stamp()
    rgb_msg = raw_image(np.ascontiguousarray(store(rgb)), encoding, now, FRAME["rgb"], pad=5)
    fused = node.fuse(raw_image(thermal, "mono8", now, FRAME["thermal"]), rgb_msg)
    np.testing.assert_array_equal(pixels_of(fused), engine.fuse(thermal, rgb))


def _bad(kind: str, good: np.ndarray, encoding: str, stamp_ns: int, frame: str):
    """A message that is wrong in one way, starting from a correct one."""
    msg = raw_image(good, encoding, stamp_ns, frame)
    if kind == "unknown encoding":
        msg.encoding = "yuv422_weird"
    elif kind == "step too small":
        msg.step = msg.step - 1
    elif kind == "truncated data":
        msg.data = bytes(msg.data)[: len(msg.data) // 2]
    elif kind == "zero size":
        msg.height, msg.width, msg.step, msg.data = 0, 0, 0, b""
    return msg


@pytest.mark.parametrize(
    "which, kind, logged",
    [
        ("thermal", "unknown encoding", "unsupported encoding 'yuv422_weird'"),
        ("rgb", "step too small", "step 191 is smaller than"),
        ("thermal", "truncated data", None),  # same reason as the first: log is throttled
        ("rgb", "zero size", None),
    ],
)
def test_bad_message_is_counted_and_the_next_pair_is_fused(
    node, pairs, engine, which, kind, logged
):
    thermal, rgb = pairs[3]
    key = f"errors.{which}_conversion"
    before = node.client.settled_counter(key)
    now = stamp()
    if which == "thermal":
        bad_pair = (
            _bad(kind, thermal, "mono8", now, FRAME["thermal"]),
            raw_image(rgb, "rgb8", now, FRAME["rgb"]),
        )
    else:
        bad_pair = (
            raw_image(thermal, "mono8", now, FRAME["thermal"]),
            _bad(kind, rgb, "rgb8", now, FRAME["rgb"]),
        )
    node.client.publish(*bad_pair)
    values = node.diagnostics_after(key, before + 1)
    assert which in values["last_error"]
    if logged:
        assert node.wait_log(logged), node.log()[-2000:]
    # The node is still alive and fuses the next good pair.
    good = mono8_pair(pairs[3], stamp())
    np.testing.assert_array_equal(pixels_of(node.fuse(*good)), engine.fuse(thermal, rgb))
    assert now not in node.client.fused
    assert node.process.poll() is None


def test_mismatched_sizes_without_alignment_are_an_error_not_a_crash(node, pairs, engine):
    thermal, rgb = pairs[0]
    results = node.client.set_parameters({"align.method": "none"})
    assert results[0].successful, results[0].reason
    try:
        before = node.client.settled_counter("errors.alignment")
        now = stamp()
        small = np.ascontiguousarray(thermal[: SIZE[1] // 2, : SIZE[0] // 2])
        node.client.publish(
            raw_image(small, "mono8", now, FRAME["thermal"]),
            raw_image(rgb, "rgb8", now, FRAME["rgb"]),
        )
        node.diagnostics_after("errors.alignment", before + 1)
        assert node.wait_log("thermal image is 32x24 but the RGB image is 64x48"), node.log()
        fused = node.fuse(*mono8_pair(pairs[0], stamp()))
        np.testing.assert_array_equal(pixels_of(fused), engine.fuse(thermal, rgb))
    finally:
        assert node.client.set_parameters({"align.method": "resize"})[0].successful


def test_newest_pair_wins_and_replaced_pairs_are_counted(node, pairs, engine):
    """While the worker is busy, newer pairs replace the waiting one; none queue up.

    A large pair keeps the worker busy for seconds; three small pairs published right after
    arrive within milliseconds, so the first two are replaced in the one-slot mailbox and
    only the last is fused. A queue would fuse all three.
    """
    big_thermal = np.tile(pairs[0][0], (4, 4))
    big_rgb = np.tile(pairs[0][1], (4, 4, 1))
    start = node.client.settled_diagnostics()
    fused_before, replaced_before = int(start["fused"]), int(start["dropped.replaced"])
    blocker = stamp()
    node.client.publish(
        raw_image(big_thermal, "mono8", blocker, FRAME["thermal"]),
        raw_image(big_rgb, "rgb8", blocker, FRAME["rgb"]),
    )
    node.diagnostics_after("pairs", int(start["pairs"]) + 1)
    burst = [blocker + (k + 1) * 200_000_000 for k in range(3)]  # 0.2 s apart: distinct pairs
    for stamp_ns in burst:
        node.client.publish(*mono8_pair(pairs[1], stamp_ns))
    assert node.client.wait_fused(burst[-1], 120) is not None
    values = node.diagnostics_after("fused", fused_before + 2)
    assert blocker in node.client.fused
    assert [s in node.client.fused for s in burst] == [False, False, True]
    assert int(values["dropped.replaced"]) - replaced_before == 2
    assert int(values["fused"]) - fused_before == 2
    # Said once in the log when it begins, not per drop (the counts are in the diagnostics).
    assert node.wait_log("pairs are being dropped (replaced"), node.log()[-2000:]


def test_diagnostics_report_rates_counts_and_latency(node):
    values = node.diagnostics_after("fused", 1)
    for key in (
        "thermal_rate_hz",
        "rgb_rate_hz",
        "pair_rate_hz",
        "fused_rate_hz",
        "latency_median_s",
        "latency_p95_s",
        "model_median_s",
        "dropped.replaced",
        "dropped.stale",
        "unpaired.thermal",
        "unpaired.rgb",
    ):
        assert key in values, key
    assert int(values["fused"]) <= int(values["pairs"]) <= int(values["rgb_received"])
    latency, p95 = float(values["latency_median_s"]), float(values["latency_p95_s"])
    model = float(values["model_median_s"])
    assert model > 0 and 0 < latency <= p95
    assert values["device"] == "cpu" and values["sync_backend"] == "builtin"
