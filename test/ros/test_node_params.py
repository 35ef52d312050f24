"""Run-time parameters through the node's real parameter services.

Accepted changes take effect on the next pair (checked against the engine and OpenCV computed
here); rejected ones come back with a reason and change nothing; model reloads swap the engine
without stopping fusion, and a failed reload keeps the old model and restores the parameters.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import torch
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

from gifnet_ros.fusion.engine import FusionEngine

pytestmark = [pytest.mark.dds, pytest.mark.distro, pytest.mark.shared]

# Default (auto) backend: message_filters where installed, so its run-time slop change is
# covered there; test_node.py pins the builtin pairer.
PARAMETERS = {"device": "cpu", "diagnostics_period": 0.3}


@pytest.fixture(scope="module")
def pairs(data_dir):
    return clip_pairs(data_dir, 2)


@pytest.fixture(scope="module")
def node(tmp_path_factory, weights_path, pairs):
    with running_node(
        tmp_path_factory.mktemp("params"),
        "params",
        {**PARAMETERS, "weights": str(weights_path)},
        pairs[0],
    ) as running:
        yield running


@pytest.fixture
def changed(node):
    """Set parameters for one test and restore their previous values afterwards."""
    saved: dict = {}

    def change(**values):
        names = {name.replace("__", "."): value for name, value in values.items()}
        for name, value in node.client.get_parameters(names).items():
            saved.setdefault(name, value)
        results = node.client.set_parameters(names)
        assert all(r.successful for r in results), [r.reason for r in results]

    yield change
    if saved:
        results = node.client.set_parameters(saved)
        assert all(r.successful for r in results), [r.reason for r in results]


def test_output_encodings_and_luminance_topic(node, pairs, engine, changed):
    thermal, rgb = pairs[1]
    luminance, colour = engine.fuse_luminance(thermal, rgb)
    changed(output_encoding="bgr8", publish_luminance=True)
    now = stamp()
    fused = node.fuse(*mono8_pair(pairs[1], now))
    assert fused.encoding == "bgr8"
    np.testing.assert_array_equal(pixels_of(fused), colour[..., ::-1])
    assert node.client.wait_until(lambda: now in node.client.luminance, 10)
    grey = node.client.luminance[now]
    assert (grey.encoding, grey.header.frame_id) == ("mono8", FRAME["rgb"])
    np.testing.assert_array_equal(pixels_of(grey), luminance)

    changed(output_encoding="mono8")
    fused = node.fuse(*mono8_pair(pairs[1], stamp()))
    assert fused.encoding == "mono8"
    np.testing.assert_array_equal(pixels_of(fused), luminance)


def test_mode_change_takes_effect_on_the_next_pair(node, pairs, weights_path, changed):
    thermal, rgb = pairs[1]
    changed(mode="grey")
    grey_engine = FusionEngine(weights=weights_path, device="cpu", precision="fp32", mode="grey")
    fused = node.fuse(*mono8_pair(pairs[1], stamp()))
    # A grey result still goes out as rgb8 (three equal channels).
    expected = grey_engine.fuse(thermal, rgb)
    np.testing.assert_array_equal(pixels_of(fused), np.repeat(expected[..., None], 3, axis=2))


def test_thermal_normalisation_change(node, pairs, weights_path, changed):
    grey, rgb = pairs[1]
    counts = grey.astype(np.uint16) * 30 + 9000
    span = [9500.0, 14000.0]
    changed(thermal__normalization="fixed", thermal__range=span)
    now = stamp()
    fused = node.fuse(
        raw_image(counts, "16UC1", now, FRAME["thermal"]), raw_image(rgb, "rgb8", now, FRAME["rgb"])
    )
    reference = FusionEngine(
        weights=weights_path,
        device="cpu",
        precision="fp32",
        thermal_norm="fixed",
        thermal_range=tuple(span),
    )
    np.testing.assert_array_equal(pixels_of(fused), reference.fuse(counts, rgb))


@pytest.mark.parametrize("method", ["resize", "homography", "crop"])
def test_alignment_methods(node, pairs, engine, changed, method):
    """The thermal image differs in size from RGB; the node aligns it as configured."""
    width, height = SIZE
    grey, rgb = pairs[1]
    if method == "resize":
        thermal = cv2.resize(grey, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
        expected_thermal = cv2.resize(thermal, SIZE, interpolation=cv2.INTER_LINEAR)
        changed(align__method="resize")
    elif method == "homography":
        thermal = cv2.resize(grey, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
        # Thermal pixel (x, y) lands at RGB (2x + 3, 2y - 1): scale plus a small shift.
        matrix = np.array([[2.0, 0.0, 3.0], [0.0, 2.0, -1.0], [0.0, 0.0, 1.0]])
        expected_thermal = cv2.warpPerspective(thermal, matrix, SIZE, flags=cv2.INTER_LINEAR)
        changed(align__method="homography", align__homography=matrix.ravel().tolist())
    else:
        # A wider thermal view; the crop cuts out exactly the RGB field of view.
        thermal = np.zeros((height + 20, width + 30), np.uint8)
        thermal[7 : 7 + height, 11 : 11 + width] = grey
        expected_thermal = grey
        changed(align__method="none", align__crop=[11, 7, width, height])
    now = stamp()
    fused = node.fuse(
        raw_image(np.ascontiguousarray(thermal), "mono8", now, FRAME["thermal"]),
        raw_image(rgb, "rgb8", now, FRAME["rgb"]),
    )
    np.testing.assert_array_equal(pixels_of(fused), engine.fuse(expected_thermal, rgb))


REJECTED = [
    ("mode", "colourise", "mode"),
    ("device", "tpu", "tpu"),
    ("precision", "fp8", "precision"),
    ("precision", "fp16", "fp16"),  # needs CUDA; rejected together with device cpu
    ("weights", "/nonexistent/Final.model", "does not exist"),
    ("network", "timm", "network"),
    ("tim_weights", "/nonexistent/model_1.pt,/nonexistent/model_2.pt", "is not a file"),
    ("thermal.normalization", "log", "thermal.normalization"),
    ("thermal.percentiles", [99.0, 1.0], "thermal.percentiles"),
    ("thermal.percentiles", [1.0, 2.0, 3.0], "thermal.percentiles"),
    ("thermal.range", [5.0, 5.0], "thermal.range"),
    ("align.method", "affine", "align.method"),
    ("align.homography", [1.0] * 8, "9 numbers"),
    ("align.homography", [0.0] * 9, "singular"),
    ("align.crop", [0, 0, 10, 0], "align.crop"),
    ("align.crop", [-1, 0, 4, 4], "negative"),
    ("output_encoding", "yuv422", "output_encoding"),
    ("sync.slop", 0.0, "sync.slop"),
    ("sync.slop", -1.0, ""),  # outside the descriptor's range: rclpy's own reason
    ("max_age", "old", ""),  # wrong type: rclpy's own reason
    ("diagnostics_period", 0.0, "diagnostics_period"),
    ("qos_depth", 3, "read-only"),
    ("compressed", True, "read-only"),
    ("sync.backend", "message_filters", "read-only"),
    ("backend", "tensorflow", "backend 'tensorflow'"),
    ("onnx_providers", "cpu,gpu", "unknown gpu"),
    ("onnx_model", "/nonexistent/gifnet.onnx", "onnx_model"),
    ("max_pixels", 10, "max_pixels"),
    ("inference_scale", 0.0, "inference_scale"),
    ("restore", "nearest", "restore"),
    ("threads", -1, ""),  # outside the descriptor's range: rclpy's own reason
    ("compile", "yes", ""),  # wrong type: rclpy's own reason
]


def test_invalid_changes_are_rejected_with_a_reason_and_change_nothing(node, pairs, engine):
    names = sorted({name for name, _, _ in REJECTED})
    before = node.client.get_parameters(names)
    for name, value, reason in REJECTED:
        (result,) = node.client.set_parameters({name: value})
        assert not result.successful, (name, value)
        assert result.reason, f"{name}={value!r} rejected without a reason"
        assert reason.lower() in result.reason.lower(), (name, value, result.reason)
        assert "\n" not in result.reason
    assert node.client.get_parameters(names) == before
    fused = node.fuse(*mono8_pair(pairs[1], stamp()))
    np.testing.assert_array_equal(pixels_of(fused), engine.fuse(*pairs[1]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA rejection")
def test_cuda_is_rejected_without_a_gpu(node):
    (result,) = node.client.set_parameters({"device": "cuda"})
    assert not result.successful and "cuda" in result.reason.lower()


def test_precision_reload_swaps_the_model_and_back(node, pairs, weights_path, engine):
    reloads = node.client.settled_counter("reloads")
    (result,) = node.client.set_parameters({"precision": "bf16"})
    assert result.successful, result.reason
    node.diagnostics_after("reloads", reloads + 1)
    bf16 = FusionEngine(weights=weights_path, device="cpu", precision="bf16")
    fused = node.fuse(*mono8_pair(pairs[1], stamp()))
    np.testing.assert_array_equal(pixels_of(fused), bf16.fuse(*pairs[1]))
    assert node.client.wait_diagnostics(lambda d: d["precision"] == "bf16 (requested)", 10)

    (result,) = node.client.set_parameters({"precision": "fp32"})
    assert result.successful, result.reason
    node.diagnostics_after("reloads", reloads + 2)
    fused = node.fuse(*mono8_pair(pairs[1], stamp()))
    np.testing.assert_array_equal(pixels_of(fused), engine.fuse(*pairs[1]))


def test_precision_auto_runs_what_an_auto_engine_picks_and_says_why(node, pairs, weights_path):
    """precision auto (the default outside these tests): the node fuses at the precision an
    engine asked for auto picks on this machine, and shows it with its reason and the
    instruction set it runs on in the log (once, on load) and in /diagnostics."""
    auto = FusionEngine(weights=weights_path, device="cpu", precision="auto")
    shown = f"{auto.precision} ({auto.precision_reason})"
    assert auto.precision in ("fp32", "bf16") and shown.startswith(f"{auto.precision} (auto: ")
    reloads = node.client.settled_counter("reloads")
    (result,) = node.client.set_parameters({"precision": "auto"})
    assert result.successful, result.reason
    node.diagnostics_after("reloads", reloads + 1)
    fused = node.fuse(*mono8_pair(pairs[1], stamp()))
    np.testing.assert_array_equal(pixels_of(fused), auto.fuse(*pairs[1]))
    isa = auto.instruction_set  # the rule itself: test_precision.py
    assert node.client.wait_diagnostics(
        lambda d: d["precision"] == shown and d["instruction_set"] == isa, 10
    )
    loaded = f"model reloaded: {auto.backend_text()}, device cpu, {shown}"
    assert node.log().count(loaded) == 1, node.log()
    assert f"; instruction set {isa}" in node.log().split(loaded, 1)[1].splitlines()[0]

    (result,) = node.client.set_parameters({"precision": "fp32"})
    assert result.successful, result.reason
    node.diagnostics_after("reloads", reloads + 2)


def test_failed_reload_keeps_the_old_model_and_restores_the_parameter(
    node, pairs, engine, weights_path, tmp_path
):
    garbage = tmp_path / "not_a_checkpoint.model"
    garbage.write_bytes(b"this is not a torch checkpoint" * 100)
    failures = node.client.settled_counter("reload_failures")
    (result,) = node.client.set_parameters({"weights": str(garbage)})
    assert result.successful, "an existing file passes the quick check; loading it fails later"
    node.diagnostics_after("reload_failures", failures + 1)
    assert node.wait_log("model reload failed"), node.log()[-2000:]
    deadline = time.monotonic() + 10
    while node.client.get_parameters(["weights"])["weights"] != str(weights_path):
        assert time.monotonic() < deadline, "weights parameter was not restored"
        time.sleep(0.1)
    fused = node.fuse(*mono8_pair(pairs[1], stamp()))
    np.testing.assert_array_equal(pixels_of(fused), engine.fuse(*pairs[1]))


def test_max_age_drops_stale_pairs(node, pairs, engine, changed):
    changed(max_age=1.0)
    stale = node.client.settled_counter("dropped.stale")
    # Stamped 1.5 s ago: too old for max_age 1.0 when the idle worker picks it up at once.
    # Still newer than every stamp sent before (hence the pause): the pairer drops a message
    # that arrives after the other stream has moved past it.
    time.sleep(2.0)
    old = stamp(-1.5)
    node.client.publish(*mono8_pair(pairs[1], old))
    node.diagnostics_after("dropped.stale", stale + 1)
    assert old not in node.client.fused
    fused = node.fuse(*mono8_pair(pairs[1], stamp()))
    np.testing.assert_array_equal(pixels_of(fused), engine.fuse(*pairs[1]))


def test_slop_change_applies_to_the_next_messages(node, pairs, engine, changed):
    """20 ms apart: not a pair with sync.slop 0.005 s, a pair with 0.05 s."""
    changed(sync__slop=0.005)
    unpaired = node.client.settled_counter("unpaired.rgb")
    first = stamp()
    node.client.publish(
        raw_image(pairs[1][0], "mono8", first + 20_000_000, FRAME["thermal"]),
        raw_image(pairs[1][1], "rgb8", first, FRAME["rgb"]),
    )
    node.diagnostics_after("unpaired.rgb", unpaired + 1)
    changed(sync__slop=0.05)
    second = stamp()
    node.client.publish(
        raw_image(pairs[1][0], "mono8", second + 20_000_000, FRAME["thermal"]),
        raw_image(pairs[1][1], "rgb8", second, FRAME["rgb"]),
    )
    node.client.publish(None, raw_image(pairs[1][1], "rgb8", second + 100_000_000, FRAME["rgb"]))
    got = node.client.wait_fused(second, 60)
    assert got is not None, node.log()[-2000:]
    assert first not in node.client.fused
    np.testing.assert_array_equal(pixels_of(got[0]), engine.fuse(*pairs[1]))
    # The lone RGB (stamped 100 ms after `second`) stays in the synchronizer's queue: wait until
    # the wall clock, which later tests stamp from, is past it by more than any slop used here,
    # or the next test's thermal image can pair with it instead of its own RGB image.
    time.sleep(max(0.0, (second + 300_000_000 - stamp()) / 1e9))


def test_reduced_size_fusion_takes_effect_on_the_next_pair(node, pairs, weights_path, changed):
    thermal, rgb = pairs[1]
    changed(inference_scale=0.5, restore="bilinear")
    reduced = FusionEngine(
        weights=weights_path,
        device="cpu",
        precision="fp32",
        inference_scale=0.5,
        restore="bilinear",
    )
    fused = node.fuse(*mono8_pair(pairs[1], stamp()))
    np.testing.assert_array_equal(pixels_of(fused), reduced.fuse(thermal, rgb))
    changed(inference_scale=1.0, max_pixels=(SIZE[0] * SIZE[1]) // 4)
    reduced.inference_scale, reduced.max_pixels, reduced.restore = (
        1.0,
        SIZE[0] * SIZE[1] // 4,
        "bilinear",
    )
    fused = node.fuse(*mono8_pair(pairs[1], stamp()))
    np.testing.assert_array_equal(pixels_of(fused), reduced.fuse(thermal, rgb))


def test_classic_backend_reload_and_its_rules(node, pairs, engine):
    """backend classic_max: a reload to the rule (no weights involved), whose output keeps
    every pixel at least as bright as the thermal image; bf16 is refused with it; back to
    torch, the node fuses with GIFNet again."""
    reloads = node.client.settled_counter("reloads")
    results = node.client.set_parameters({"backend": "classic_max", "mode": "grey"})
    assert all(r.successful for r in results), [r.reason for r in results]
    node.diagnostics_after("reloads", reloads + 1)
    thermal, rgb = pairs[1]
    fused = node.fuse(*mono8_pair(pairs[1], stamp()))
    assert (pixels_of(fused)[..., 0] >= thermal).all()
    assert node.client.diagnostics["backend"] == "classic_max"
    (result,) = node.client.set_parameters({"precision": "bf16"})
    assert not result.successful and "fp32 only" in result.reason

    for name, value in (("backend", "torch"), ("mode", "thermal_rgb")):
        (result,) = node.client.set_parameters({name: value})
        assert result.successful, result.reason
    node.diagnostics_after("reloads", reloads + 2)
    fused = node.fuse(*mono8_pair(pairs[1], stamp()))
    np.testing.assert_array_equal(pixels_of(fused), engine.fuse(thermal, rgb))


def test_network_tim_light_reload_and_its_modes(node, pairs, engine):
    """network tim_light: a reload to TIM with the project's weights (no GIFNet checkpoint
    involved), fusing what a tim_light engine fuses; a mode TIM has no weights for is refused
    with the reason; back to gifnet, GIFNet again."""
    reloads = node.client.settled_counter("reloads")
    (result,) = node.client.set_parameters({"network": "tim_light"})
    assert result.successful, result.reason
    node.diagnostics_after("reloads", reloads + 1)
    tim = FusionEngine(network="tim_light", device="cpu", precision="fp32")
    fused = node.fuse(*mono8_pair(pairs[1], stamp()))
    np.testing.assert_array_equal(pixels_of(fused), tim.fuse(*pairs[1]))
    assert "tim_light (TIM)" in node.log()
    (result,) = node.client.set_parameters({"mode": "medical"})
    assert not result.successful and "fuses in modes thermal_rgb, grey only" in result.reason

    (result,) = node.client.set_parameters({"network": "gifnet"})
    assert result.successful, result.reason
    node.diagnostics_after("reloads", reloads + 2)
    fused = node.fuse(*mono8_pair(pairs[1], stamp()))
    np.testing.assert_array_equal(pixels_of(fused), engine.fuse(*pairs[1]))
