"""Starting the node: bad configurations stop it with one line; the message_filters backend.

A node that cannot run as configured must say why in one line and exit non-zero, rather than
come up half-working or print a traceback.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from node_harness import (
    FRAME,
    clip_pairs,
    dds_env,
    mono8_pair,
    pixels_of,
    raw_image,
    running_node,
    stamp,
)

from gifnet_ros.demo import start_node, stop_node
from gifnet_ros.engine import FusionEngine

HAVE_MESSAGE_FILTERS = importlib.util.find_spec("message_filters") is not None


def _start_and_wait(tmp_path, parameters: dict) -> tuple[int | None, str]:
    """Run the node with ``parameters`` until it exits (or 90 s); exit code and log."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in dds_env(tmp_path).items():
            patch.setenv(key, value)
        log = tmp_path / "node.log"
        process = start_node("/gifnet_test_startup", parameters, log)
        try:
            code = process.wait(90)
        except Exception:
            stop_node(process)
            code = None
    return code, log.read_text(errors="replace")


@pytest.mark.parametrize(
    "parameters, message",
    [
        ({"mode": "nonsense"}, "mode 'nonsense'"),
        ({"align.homography": [1.0, 0.0, 0.0]}, "align.homography needs 9 numbers"),
        ({"weights": "/nonexistent/Final.model"}, "/nonexistent/Final.model"),
        ({"max_age": 1}, "max_age"),  # an integer where a double is declared
        ({"backend": "classic_gff", "device": "cuda"}, "runs on the CPU"),
    ],
)
def test_bad_configuration_stops_the_node_with_one_line(
    tmp_path, weights_path, parameters, message
):
    code, log = _start_and_wait(tmp_path, {"weights": str(weights_path), **parameters})
    assert code == 1, log
    lines = [line for line in log.splitlines() if "cannot start" in line]
    assert len(lines) == 1 and message in lines[0], log
    assert "Traceback" not in log


def test_classic_backend_starts_and_fuses_without_any_weights(tmp_path, data_dir, monkeypatch):
    """No checkpoint anywhere (no parameter, no GIFNET_WEIGHTS, an empty cache): a node with a
    classical backend still starts and publishes the rule's fusion."""
    monkeypatch.delenv("GIFNET_WEIGHTS", raising=False)
    monkeypatch.setenv("GIFNET_CACHE_DIR", str(tmp_path / "empty-cache"))
    pairs = clip_pairs(data_dir, 2)
    parameters = {"device": "cpu", "sync.backend": "builtin", "backend": "classic_laplacian"}
    with running_node(tmp_path, "classic", parameters, pairs[0]) as node:
        fused = node.fuse(*mono8_pair(pairs[1], stamp()))
        rule = FusionEngine(backend="classic_laplacian")
        np.testing.assert_array_equal(pixels_of(fused), rule.fuse(*pairs[1]))
        assert "classic_laplacian" in node.log()


@pytest.mark.skipif(HAVE_MESSAGE_FILTERS, reason="message_filters is installed here")
def test_required_message_filters_missing_is_a_startup_error(tmp_path, weights_path):
    code, log = _start_and_wait(
        tmp_path, {"weights": str(weights_path), "sync.backend": "message_filters"}
    )
    assert code == 1, log
    assert "sync.backend is message_filters but the message_filters package is not" in log
    assert "Traceback" not in log


def test_message_filters_backend_pairs_like_the_builtin_one(
    tmp_path_factory, weights_path, data_dir
):
    pytest.importorskip("message_filters", reason="message_filters comes with a ROS install")
    pairs = clip_pairs(data_dir, 2)
    engine = FusionEngine(weights=weights_path, device="cpu")
    parameters = {
        "device": "cpu",
        "weights": str(weights_path),
        "sync.backend": "message_filters",
        "diagnostics_period": 0.3,
    }
    with running_node(
        tmp_path_factory.mktemp("sync"), "message_filters", parameters, pairs[0]
    ) as node:
        assert node.diagnostics_after("fused", 1)["sync_backend"] == "message_filters"
        fused = node.fuse(*mono8_pair(pairs[1], stamp()))
        np.testing.assert_array_equal(pixels_of(fused), engine.fuse(*pairs[1]))
        # Offset stamps within the slop pair as well and keep the RGB stamp.
        rgb_stamp = stamp()
        node.client.publish(
            raw_image(pairs[1][0], "mono8", rgb_stamp + 10_000_000, FRAME["thermal"]),
            raw_image(pairs[1][1], "rgb8", rgb_stamp, FRAME["rgb"]),
        )
        node.client.publish(
            None, raw_image(pairs[1][1], "rgb8", rgb_stamp + 100_000_000, FRAME["rgb"])
        )
        assert node.client.wait_fused(rgb_stamp, 60) is not None, node.log()[-2000:]
