"""Generated bad messages through the conversion layer and the offline bag tool.

The cases and their expected fate come from ``bad_input`` (one strategy for every layer);
test_node_robust.py sends the same kind of cases through the running node. Each test checks
that a message converts exactly when every pixel is present, that a failure is a one-line
``ImageConversionError`` (never another exception), and that converted pixels are the ones
generated.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bad_input import RAN, Case, cases, good_compressed, print_counts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from gifnet_ros.fusion.conversion import ImageConversionError, compressed_to_array, image_to_array
from gifnet_ros.tools import fuse_bag as bag_tool

pytestmark = pytest.mark.shared

STORE = get_typestore(Stores.ROS2_HUMBLE)
THERMAL, RGB = "/thermal/image", "/rgb/image"
SIZE = (32, 24)


@pytest.fixture(scope="module", autouse=True)
def counts(request):
    yield
    print_counts(request, "conversion")
    print_counts(request, "bag tool")


def ros_message(case: Case) -> object:
    """The case as a real rclpy sensor_msgs message."""
    from sensor_msgs.msg import CompressedImage, Image

    kind = CompressedImage if case.compressed_format is not None else Image
    return kind(**case.fields())


def convert(msg: object) -> np.ndarray:
    if hasattr(msg, "format"):
        return compressed_to_array(msg)
    return image_to_array(msg)


@settings(max_examples=400, deadline=None)
@given(cases())
def test_conversion_of_generated_messages(case):
    RAN[f"conversion {case.expected}"] += 1
    msg = ros_message(case)
    if case.expected == "conversion":
        with pytest.raises(ImageConversionError) as info:
            convert(msg)
        assert "\n" not in str(info.value) and str(info.value), case.describe()
        return
    array = convert(msg)
    assert array.shape[:2] == (case.height, case.width), case.describe()
    if case.role == "rgb":
        assert array.shape == (case.height, case.width, 3) and array.dtype == np.uint8
    else:
        assert array.ndim == 2
    if case.pixels is not None:
        expected = case.pixels
        if case.encoding in ("bgr8", "8UC3"):
            expected = expected[..., ::-1]
        elif case.encoding == "rgba8":
            expected = expected[..., :3]
        elif case.encoding == "bgra8":
            expected = expected[..., 2::-1]
        np.testing.assert_array_equal(array, expected, err_msg=case.describe())


# -- the offline tool -------------------------------------------------------------------------


def _serialized(case: Case, stamp_ns: int) -> tuple[str, bytes]:
    header = STORE.types["std_msgs/msg/Header"](
        stamp=STORE.types["builtin_interfaces/msg/Time"](
            sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000
        ),
        frame_id=case.role,
    )
    fields = case.fields()
    fields["data"] = np.frombuffer(fields["data"], np.uint8)
    msgtype = (
        "sensor_msgs/msg/CompressedImage"
        if case.compressed_format is not None
        else "sensor_msgs/msg/Image"
    )
    return msgtype, STORE.serialize_cdr(STORE.types[msgtype](header=header, **fields), msgtype)


def _stamps(kinds: list[str], start: int) -> list[int]:
    """Pair stamps: now = the next second, zero, equal to the previous pair, one minute back."""
    out, previous, clock = [], start, start
    for kind in kinds:
        if kind == "now":
            clock += 1_000_000_000
            value = clock
        elif kind == "zero":
            value = 0
        elif kind == "equal_previous":
            value = previous
        else:
            value = previous - 60_000_000_000
        out.append(value)
        previous = value
    return out


def write_bag(path: Path, bad: list[Case], good: tuple[np.ndarray, np.ndarray]) -> list[int]:
    """One pair per case: the case on its topic, a good partner (PNG) on the other, same stamp.

    Topics are CompressedImage when the case is (so garbage JPEGs go in as they would be
    recorded), else Image. Stamps follow each case's stamp kind; recording times increase.
    Returns the stamps; equal stamps make the tool's pairing ambiguous, so the caller passes
    cases whose stamps are distinct (zero and equal are covered by the node test).
    """
    stamps = _stamps([c.stamp for c in bad], 1_700_000_000_000_000_000)
    thermal, rgb = good
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {}
        for topic in (THERMAL, RGB):
            for msgtype in ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"):
                conns[(topic, msgtype)] = writer.add_connection(topic, msgtype, typestore=STORE)
        for index, (case, stamp_ns) in enumerate(zip(bad, stamps, strict=True)):
            partner_pixels = rgb if case.role == "thermal" else thermal
            partner = Case(
                "rgb" if case.role == "thermal" else "thermal",
                "none",
                "ok",
                compressed_format="png",
                data=good_compressed(partner_pixels),
            )
            for offset, message in enumerate((case, partner)):
                msgtype, raw = _serialized(message, stamp_ns)
                topic = THERMAL if message.role == "thermal" else RGB
                writer.write(conns[(topic, msgtype)], 1_000 + index * 10 + offset, raw)
    return stamps


@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(
        cases(size=SIZE, stamps=("now", "backwards")),
        min_size=4,
        max_size=8,
    ).filter(lambda cs: sum(c.expected == "ok" for c in cs) <= 3)
)
def test_bag_with_generated_bad_messages(bag_inputs, tmp_path_factory, weights_path, batch):
    """--skip-bad: every bad pair is skipped and named in the report, the rest fused; without
    it the first bad pair stops the run and nothing is written to OUTPUT."""
    tmp = tmp_path_factory.mktemp("bag")
    stamps = write_bag(tmp / "in", batch, bag_inputs)
    expected_bad = [s for c, s in zip(batch, stamps, strict=True) if c.expected != "ok"]
    expected_ok = [s for c, s in zip(batch, stamps, strict=True) if c.expected == "ok"]
    for case in batch:
        RAN[f"bag tool {case.expected}"] += 1
    # The good partners are one image again and again: not a frozen camera to skip.
    args = [
        str(tmp / "in"), "--thermal-topic", THERMAL, "--rgb-topic", RGB, "--align", "none",
        "--weights", str(weights_path), "--device", "cpu", "--no-progress",
        "--freeze-action", "ignore",
    ]  # fmt: skip
    report_path = tmp / "report.json"
    code = bag_tool.main(
        [*args, "-o", str(tmp / "out"), "--skip-bad", "--report", str(report_path)]
    )
    report = json.loads(report_path.read_text())
    assert code == 0, report["error"]
    assert report["pairs"]["planned"] == len(batch)
    assert sorted(s["rgb_stamp_ns"] for s in report["skipped"]) == sorted(expected_bad)
    assert all(s["reason"] and "\n" not in s["reason"] for s in report["skipped"])
    assert report["pairs"]["fused"] == len(expected_ok)
    assert report["output_topics"].get("/fused/image", 0) == len(expected_ok)

    if expected_bad:
        code = bag_tool.main([*args, "-o", str(tmp / "strict"), "--report", str(report_path)])
        report = json.loads(report_path.read_text())
        assert code == 1 and report["status"] == "error" and "\n" not in report["error"]
        assert not (tmp / "strict").exists() and not list(tmp.glob(".strict.*"))
        assert not report["output_written"]


@pytest.fixture(scope="module")
def bag_inputs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(6)
    return (
        rng.integers(0, 256, (SIZE[1], SIZE[0]), np.uint8),
        rng.integers(0, 256, (SIZE[1], SIZE[0], 3), np.uint8),
    )
