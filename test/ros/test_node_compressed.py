"""CompressedImage inputs, the default (auto) pairing backend, and shutdown on SIGINT.

The node here takes ``compressed: true`` with ``thermal_transport: raw``, so the RGB input is
``rgb/image/compressed`` (image_transport naming) and the thermal one stays a raw Image: the
global switch and the per-input override are both exercised.
"""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest
from node_harness import (
    FRAME,
    clip_pairs,
    compressed_image,
    pixels_of,
    raw_image,
    running_node,
    stamp,
)

from gifnet_ros.ros.node_process import stop_node

pytestmark = [pytest.mark.dds, pytest.mark.shared]

HAVE_MESSAGE_FILTERS = importlib.util.find_spec("message_filters") is not None


@pytest.fixture(scope="module")
def pairs(data_dir):
    return clip_pairs(data_dir, 2)


@pytest.fixture(scope="module")
def node(tmp_path_factory, weights_path, pairs):
    parameters = {
        "device": "cpu",
        "weights": str(weights_path),
        "compressed": True,
        "thermal_transport": "raw",
        "diagnostics_period": 0.3,
    }
    with running_node(
        tmp_path_factory.mktemp("compressed"),
        "compressed",
        parameters,
        pairs[0],
        transports=("raw", "compressed"),
    ) as running:
        yield running


def _encode(rgb: np.ndarray, ext: str) -> bytes:
    ok, data = cv2.imencode(ext, np.ascontiguousarray(rgb[..., ::-1]))
    assert ok
    return data.tobytes()


@pytest.mark.parametrize(
    "fmt, ext",
    [
        ("rgb8; jpeg compressed bgr8", ".jpg"),  # image_transport's compressed plugin
        ("rgb8; png compressed bgr8", ".png"),
        ("jpeg", ".jpg"),  # older or third-party publishers
    ],
)
def test_compressed_rgb_is_decoded_and_fused(node, pairs, engine, fmt, ext):
    thermal, rgb = pairs[1]
    data = _encode(rgb, ext)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    if ext == ".png":
        np.testing.assert_array_equal(decoded, rgb)  # lossless: the input itself
    now = stamp()
    fused = node.fuse(
        raw_image(thermal, "mono8", now, FRAME["thermal"]),
        compressed_image(data, fmt, now, FRAME["rgb"]),
    )
    assert fused.header.frame_id == FRAME["rgb"]
    np.testing.assert_array_equal(pixels_of(fused), engine.fuse(thermal, decoded))


def test_undecodable_data_is_counted_and_the_next_pair_is_fused(node, pairs, engine):
    thermal, rgb = pairs[1]
    before = node.client.settled_counter("errors.rgb_conversion")
    now = stamp()
    node.client.publish(
        raw_image(thermal, "mono8", now, FRAME["thermal"]),
        compressed_image(b"\xff\xd8 not really a jpeg", "jpeg", now, FRAME["rgb"]),
    )
    node.diagnostics_after("errors.rgb_conversion", before + 1)
    assert node.wait_log("could not decode"), node.log()[-2000:]
    later = stamp()
    fused = node.fuse(
        raw_image(thermal, "mono8", later, FRAME["thermal"]),
        compressed_image(_encode(rgb, ".png"), "png", later, FRAME["rgb"]),
    )
    np.testing.assert_array_equal(pixels_of(fused), engine.fuse(thermal, rgb))


def test_auto_backend_uses_message_filters_when_present_else_warns_once(node):
    values = node.diagnostics_after("fused", 1)
    if HAVE_MESSAGE_FILTERS:
        assert values["sync_backend"] == "message_filters"
    else:
        assert values["sync_backend"] == "builtin"
        assert node.log().count("message_filters is not installed") == 1


def test_sigint_during_inference_stops_the_node_cleanly(node, pairs):
    """Ctrl-C (what ros2 launch sends first) while the worker is inside a forward pass."""
    big_thermal = np.tile(pairs[0][0], (4, 4))
    big_rgb = np.tile(pairs[0][1], (4, 4, 1))
    pairs_before = node.client.settled_counter("pairs")
    now = stamp()
    node.client.publish(
        raw_image(big_thermal, "mono8", now, FRAME["thermal"]),
        compressed_image(_encode(big_rgb, ".png"), "png", now, FRAME["rgb"]),
    )
    node.diagnostics_after("pairs", pairs_before + 1)
    code = stop_node(node.process, timeout=15.0)
    assert code == 0, f"exit code {code}; log:\n{node.log()[-3000:]}"
    assert "Traceback" not in node.log()
