"""gifnet-sync-offset: the thermal clock offset from bags of the shared M3SVD clips with
known shifts, and from synthetic motion; its one-line errors.

The convention under test, stated here independently of the code: ``sync.thermal_offset``
is ADDED to every thermal stamp so that it equals the RGB stamp of the same instant. The
bags are built with thermal stamps = RGB stamps of the same scene + ``shift`` (gifnet-make-bag
``--thermal-offset-ms``), so the right answer is ``-shift``, and it is right when it is within
one frame period of that.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from bag_helpers import build, m3svd_clip

from gifnet_ros.offline import sync_offset
from gifnet_ros.offline.sync_offset import SyncOffsetError, estimate_offset
from gifnet_ros.tools.sync_offset import main

RATES = {"0111_1716": 30.0, "1230_1202": 22.0}  # frames per second, set with --rate
SHIFTS = (-0.5, -0.23, 0.0, 0.1, 0.37, 0.5)  # s; 0.1 is 3 frames at 30 fps, the rest are not
FRAMES = 100
VALUE = re.compile(r"^    sync\.thermal_offset: (-?\d+\.\d{3})$", re.MULTILINE)


def shifted_bag(
    data_dir: Path, out: Path, clip: str, shift: float, *extra: str, jitter_ms: float = 2.0
) -> Path:
    """A bag of the clip's first FRAMES pairs (64x48) whose thermal stamps are the RGB stamps
    of the same scene plus ``shift`` seconds, each stamp jittered by up to ``jitter_ms`` as
    real drivers' stamps are."""
    return build(
        m3svd_clip(data_dir, clip),
        out,
        FRAMES,
        "--rate",
        str(RATES[clip]),
        "--thermal-offset-ms",
        str(shift * 1000),
        "--jitter-ms",
        str(jitter_ms),
        *extra,
    )


def printed_offset(out: str) -> float:
    """The value of the params-file snippet the tool printed; the other lines agree with it."""
    match = VALUE.search(out)
    assert match, out
    value = match[1]
    lines = out.splitlines()
    assert lines[0].startswith(f"gifnet-sync-offset: sync.thermal_offset = {value} s"), out
    assert lines[1:4] == ["fusion_node:", "  ros__parameters:", f"    sync.thermal_offset: {value}"]
    assert lines[4].endswith(f"--thermal-offset {value}"), out
    return float(value)


@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("clip", sorted(RATES))
def test_known_shift_is_found_within_a_frame(data_dir, tmp_path, capsys, clip, shift):
    bag = shifted_bag(data_dir, tmp_path / "bag", clip, shift)
    capsys.readouterr()
    assert main([str(bag)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert abs(printed_offset(out) - (-shift)) <= 1.0 / RATES[clip], out
    assert f"frames used: {FRAMES} thermal" in out


def test_mono16_thermal(data_dir, tmp_path, capsys):
    """16-bit thermal counts (the tool normalises each frame itself) give the same answer."""
    bag = shifted_bag(data_dir, tmp_path / "bag", "1230_1202", 0.31, "--thermal-encoding", "mono16")
    capsys.readouterr()
    assert main([str(bag)]) == 0
    assert abs(printed_offset(capsys.readouterr().out) + 0.31) <= 1.0 / 22


def test_stamp_jitter_of_a_third_of_a_frame(data_dir, tmp_path, capsys):
    """Stamps jittered by up to 10 ms at 30 fps (host receipt over USB): still within a frame,
    since a change is divided by whole frame periods, not by the jittered gap."""
    bag = shifted_bag(data_dir, tmp_path / "bag", "0111_1716", -0.33, jitter_ms=10.0)
    capsys.readouterr()
    assert main([str(bag)]) == 0
    assert abs(printed_offset(capsys.readouterr().out) - 0.33) <= 1.0 / 30


def test_installed_tool_on_compressed_topics(data_dir, tmp_path):
    """The console script in a child process, on CompressedImage topics (PNG, mono16
    thermal) under image_transport's names, which the default topics fall back to."""
    bag = shifted_bag(
        data_dir,
        tmp_path / "bag",
        "0111_1716",
        -0.17,
        "--compressed",
        "png",
        "--thermal-encoding",
        "mono16",
    )
    script = Path(sys.executable).with_name("gifnet-sync-offset")
    command = (
        [str(script)] if script.exists() else [sys.executable, "-m", "gifnet_ros.tools.sync_offset"]
    )
    result = subprocess.run(
        [*command, str(bag)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert abs(printed_offset(result.stdout) - 0.17) <= 1.0 / 30


def moving_texture(times: np.ndarray, seed: int) -> list[np.ndarray]:
    """Frames (48x64 grey float) of a random texture that drifts by a random, smooth,
    non-periodic path, at the given instants (s): a camera shaken by hand."""
    rng = np.random.default_rng(seed)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (96, 128)).astype(np.float32), (0, 0), 2.0)
    fine = np.arange(0.0, times.max() + 0.01, 0.001)  # the path, 1 ms steps
    velocity = cv2.GaussianBlur(rng.normal(0, 1, (fine.size, 2)), (1, 0), 60.0)
    path = np.cumsum(velocity, axis=0) * 0.4
    frames = []
    for t in times:
        dx, dy = path[min(round(t * 1000), len(path) - 1)]
        shift = np.float32([[1, 0, 32 + dx], [0, 1, 24 + dy]])
        moved = cv2.warpAffine(texture, shift, (128, 96), flags=cv2.INTER_LINEAR)
        frames.append(cv2.resize(moved[24:72, 32:96], (64, 48)))
    return frames


def test_sign_convention_late_thermal_stamps_need_a_negative_offset():
    """Thermal stamps 137 ms late (thermal at 30 fps, RGB at 25 fps, the thermal image 16-bit
    and inverted as a hot-is-dark palette would be): the offset is -0.137 s, so that
    thermal stamp + offset = RGB stamp of the same instant."""
    late = 0.137
    rgb_times = np.arange(0.0, 4.0, 1 / 25)
    thermal_times = np.arange(0.01, 4.0, 1 / 30)
    scene = moving_texture(np.concatenate([rgb_times, thermal_times]), seed=3)
    rgb = [
        (round(t * 1e9), cv2.cvtColor(f.astype(np.uint8), cv2.COLOR_GRAY2RGB))
        for t, f in zip(rgb_times, scene[: rgb_times.size], strict=True)
    ]
    thermal = [
        (round((t + late) * 1e9), (9000 - 8 * f).astype(np.uint16))
        for t, f in zip(thermal_times, scene[rgb_times.size :], strict=True)
    ]
    estimate = estimate_offset(thermal, rgb)
    assert abs(estimate.offset - (-late)) <= 1 / 30, estimate
    assert estimate.margin == estimate.peak - estimate.runner_up > sync_offset.MIN_MARGIN
    assert (estimate.thermal_frames, estimate.rgb_frames) == (thermal_times.size, rgb_times.size)


def test_the_pure_function_refuses_too_few_frames():
    frame = np.zeros((48, 64), np.uint8)
    with pytest.raises(SyncOffsetError, match="the thermal stream has 1 frame"):
        estimate_offset([(0, frame)], [(i * 10**8, frame) for i in range(10)])


def _same_frame_bag(data_dir: Path, tmp_path: Path) -> Path:
    """20 pairs that are all the clip's first pair: a recording without motion."""
    thermal_video, rgb_video = m3svd_clip(data_dir, "0111_1716")
    for video, folder in ((thermal_video, tmp_path / "ir"), (rgb_video, tmp_path / "vis")):
        folder.mkdir()
        ok, frame = cv2.VideoCapture(str(video)).read()
        assert ok
        for i in range(20):
            cv2.imwrite(str(folder / f"{i:03d}.png"), frame)
    return build((tmp_path / "ir", tmp_path / "vis"), tmp_path / "still", 20)


def _unrelated_bag(data_dir: Path, tmp_path: Path) -> Path:
    """Thermal of one clip with RGB of the other: motion, but none in common."""
    return build(
        (m3svd_clip(data_dir, "1230_1202")[0], m3svd_clip(data_dir, "0111_1716")[1]),
        tmp_path / "unrelated",
        FRAMES,
    )


def _broken_bag(tmp_path: Path) -> Path:
    bag = tmp_path / "broken"
    bag.mkdir()
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: [this is not a bag\n")
    return bag


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing bag", r"/nowhere: no such file or directory"),
        ("broken bag", r"/broken: cannot read the bag: "),
        (
            "missing topic",
            r"no RGB topic /camera/image; image topics in the bag: /rgb/image, /thermal/image",
        ),
        ("single frame", r"the thermal stream has 1 frame\(s\) .*at least 3 are needed"),
        ("no motion", r"no motion in the thermal stream: its 20 frames barely change"),
        ("unrelated streams", r"no clear correlation peak \(best 0\.\d\d at "),
    ],
)
def test_errors_are_one_line_with_exit_status_1(data_dir, tmp_path, capsys, case, message):
    args = {
        "missing bag": lambda: [str(tmp_path / "nowhere")],
        "broken bag": lambda: [str(_broken_bag(tmp_path))],
        "missing topic": lambda: [
            str(shifted_bag(data_dir, tmp_path / "bag", "0111_1716", 0.0)),
            "--rgb-topic",
            "/camera/image",
        ],
        "single frame": lambda: [
            str(build(m3svd_clip(data_dir, "0111_1716"), tmp_path / "one", 1))
        ],
        "no motion": lambda: [str(_same_frame_bag(data_dir, tmp_path))],
        "unrelated streams": lambda: [str(_unrelated_bag(data_dir, tmp_path))],
    }[case]()
    capsys.readouterr()
    assert main(args) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert re.fullmatch(f"gifnet-sync-offset: error: .*{message}.*\n", err), err
