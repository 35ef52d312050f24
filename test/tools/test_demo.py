"""``gifnet-demo`` end to end: real node process, DDS, PNGs and report on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from node_harness import DOMAIN_ID, dds_env

from gifnet_ros.fusion.engine import FusionEngine
from gifnet_ros.offline.sources import m3svd_pairs

pytestmark = [pytest.mark.dds, pytest.mark.shared]

SMALL = ["--size", "64x48", "--every", "30", "--timeout", "120", "--domain-id", str(DOMAIN_ID)]
EXACT = ["--precision", "fp32"]  # as the reference engine the fused frames are compared with


def _run_demo(tmp_path: Path, data_dir: Path, *arguments: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **dds_env(tmp_path), "GIFNET_SHARED": str(data_dir.parent)}
    # No cached or $GIFNET_WEIGHTS checkpoint: the demo must fall back to ../shared's.
    env.pop("GIFNET_WEIGHTS", None)
    env["GIFNET_CACHE_DIR"] = str(tmp_path / "empty_cache")
    return subprocess.run(
        [sys.executable, "-m", "gifnet_ros.tools.demo", *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _png(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image[..., ::-1]


def test_demo_streams_the_shared_clip_and_writes_pngs_and_report(tmp_path, data_dir, weights_path):
    out = tmp_path / "out"
    result = _run_demo(tmp_path, data_dir, "--frames", "2", "--out", str(out), *SMALL, *EXACT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "shared folder" in result.stdout  # the weights fallback was announced
    report = json.loads((out / "report.json").read_text())
    assert report["pairs_sent"] == 2 and report["fused_received"] == 2
    assert report["node"]["fused"] == 2 and report["size"] == "64x48"
    assert report["latency_s"]["median"] > 0
    assert (out / "report.txt").read_text().startswith("GIFNet fusion node demo")
    engine = FusionEngine(weights=weights_path, device="cpu", precision="fp32")
    pairs = m3svd_pairs("0111_1716", 2, (64, 48), 30, shared=data_dir.parent)
    for index, pair in enumerate(pairs):
        np.testing.assert_array_equal(_png(out / f"fused_{index:03d}.png"), engine.fuse(*pair))
        montage = _png(out / f"montage_{index:03d}.png")
        assert montage.shape == (48, 64 * 3, 3)
    assert not list(out.glob("*.part"))


def _demo_of_one_pair(
    tmp_path: Path, data_dir: Path, engine: FusionEngine, *arguments: str
) -> tuple[subprocess.CompletedProcess, Path]:
    """The demo on the clip's first small pair with these flags, which must succeed and write
    what ``engine`` fuses from that pair; its result and output folder."""
    out = tmp_path / "out"
    result = _run_demo(tmp_path, data_dir, *arguments, "--frames", "1", "--out", str(out), *SMALL)
    assert result.returncode == 0, result.stdout + result.stderr
    (pair,) = m3svd_pairs("0111_1716", 1, (64, 48), 30, shared=data_dir.parent)
    np.testing.assert_array_equal(_png(out / "fused_000.png"), engine.fuse(*pair))
    return result, out


def test_demo_with_a_classic_backend_needs_no_weights(tmp_path, data_dir):
    rule = FusionEngine(backend="classic_average")
    result, _ = _demo_of_one_pair(tmp_path, data_dir, rule, "--backend", "classic_average")
    assert "none needed by backend classic_average" in result.stdout


def test_demo_with_tim_light_needs_no_gifnet_checkpoint(tmp_path, data_dir):
    """--network tim_light: the node runs TIM with the project's weights (no GIFNet checkpoint
    looked for), fuses what a tim_light engine fuses, and the report names the network."""
    tim = FusionEngine(network="tim_light", device="cpu", precision="fp32")
    result, out = _demo_of_one_pair(tmp_path, data_dir, tim, "--network", "tim_light", *EXACT)
    assert "tim_light: this project's TIM weights" in result.stdout
    assert json.loads((out / "report.json").read_text())["network"] == "tim_light"


def test_demo_plays_a_bag(tmp_path, data_dir, weights_path):
    videos = data_dir / "m3svd"
    bag = tmp_path / "bag"
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "gifnet_ros.tools.make_bag",
            "--thermal", str(videos / "infrared" / "0111_1716.mp4"),
            "--rgb", str(videos / "visible" / "0111_1716.mp4"),
            "--thermal-encoding", "mono16",
            "--max-frames", "3",
            "--resize", "64x48",
            "--jitter-ms", "3",
            str(bag),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    out = tmp_path / "out"
    result = _run_demo(
        tmp_path, data_dir, "--bag", str(bag), "--frames", "2", "--out", str(out),
        "--weights", str(weights_path), *SMALL,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["source"].startswith("bag") and report["fused_received"] == 2


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--thermal-video", "a.mp4"], "--thermal-video and --rgb-video go together"),
        (["--thermal-video", "nope.mp4", "--rgb-video", "nope.mp4"], "nope.mp4"),
        (["--bag", "/nonexistent/bag"], "/nonexistent/bag"),
    ],
)
def test_demo_input_errors_are_one_line(tmp_path, data_dir, weights_path, arguments, message):
    result = _run_demo(tmp_path, data_dir, *arguments, "--weights", str(weights_path), *SMALL)
    assert result.returncode == 1
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and message in errors[0], result.stderr


def test_bag_pairs_returns_the_first_stamp_matched_frames(tmp_path, data_dir):
    """--bag input: the first pairs by stamp (jittered), decoded from only the messages used."""
    from bag_helpers import SIZE, clip_paths, video_frames

    from gifnet_ros.offline.sources import bag_pairs
    from gifnet_ros.tools.make_bag import main as make_bag

    thermal_video, rgb_video = clip_paths(data_dir)
    bag = tmp_path / "bag"
    args = ["--thermal", str(thermal_video), "--rgb", str(rgb_video), "--max-frames", "4",
            "--resize", f"{SIZE[0]}x{SIZE[1]}", "--jitter-ms", "3", str(bag)]  # fmt: skip
    assert make_bag(args) == 0
    pairs = bag_pairs(bag, "/thermal/image", "/rgb/image", 2, None)
    thermal, rgb = video_frames(thermal_video, 2), video_frames(rgb_video, 2)
    assert len(pairs) == 2
    for k, (grey, colour) in enumerate(pairs):
        np.testing.assert_array_equal(grey, cv2.cvtColor(thermal[k], cv2.COLOR_BGR2GRAY))
        np.testing.assert_array_equal(colour, cv2.cvtColor(rgb[k], cv2.COLOR_BGR2RGB))
