"""gifnet-make-bag: bags from the shared M3SVD clips and RoadScene images, read back."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from bag_helpers import SIZE, clip_paths, leftovers, read_bag, stamp, video_frames

from gifnet_ros.tools.make_bag import main


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_video_round_trip(data_dir, tmp_path, storage):
    thermal_video, rgb_video = clip_paths(data_dir)
    out = tmp_path / "bag"
    n, jitter_ms, offset_ms, latency_ms, start = 4, 3.0, 8.0, 10.0, 100.0
    assert (
        main(
            [
                str(out),
                "--thermal",
                str(thermal_video),
                "--rgb",
                str(rgb_video),
                "--max-frames",
                str(n),
                "--resize",
                "64x48",
                "--thermal-encoding",
                "mono16",
                "--rgb-encoding",
                "bgr8",
                "--jitter-ms",
                str(jitter_ms),
                "--thermal-offset-ms",
                str(offset_ms),
                "--latency-ms",
                str(latency_ms),
                "--start",
                str(start),
                "--seed",
                "5",
                "--storage",
                storage,
            ]
        )
        == 0
    )
    assert not leftovers(out)

    metadata = yaml.safe_load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert metadata["version"] == 8  # readable by Humble's rosbag2
    assert metadata["storage_identifier"] == storage
    assert {
        t["topic_metadata"]["name"]: (t["topic_metadata"]["type"], t["message_count"])
        for t in metadata["topics_with_message_count"]
    } == {
        "/thermal/image": ("sensor_msgs/msg/Image", n),
        "/rgb/image": ("sensor_msgs/msg/Image", n),
    }

    bag = read_bag(out)
    thermal_frames = video_frames(thermal_video, n, SIZE)
    rgb_frames = video_frames(rgb_video, n, SIZE)
    period_ns = 1e9 / 30.0
    deviations = []
    for k in range(n):
        nominal = round(start * 1e9) + round(k * period_ns)
        t_recorded, t_msg = bag["/thermal/image"][k]
        r_recorded, r_msg = bag["/rgb/image"][k]
        assert t_msg.header.frame_id == "thermal_camera"
        assert r_msg.header.frame_id == "rgb_camera"
        assert abs(stamp(t_msg) - nominal - offset_ms * 1e6) <= jitter_ms * 1e6
        assert abs(stamp(r_msg) - nominal) <= jitter_ms * 1e6
        deviations.append(stamp(r_msg) - nominal)
        assert t_recorded == stamp(t_msg) + latency_ms * 1e6
        assert r_recorded == stamp(r_msg) + latency_ms * 1e6
        # mono16: the 8-bit grey value times 257, little-endian, unpadded rows.
        assert (t_msg.encoding, t_msg.width, t_msg.height, t_msg.step) == ("mono16", 64, 48, 128)
        grey = cv2.cvtColor(thermal_frames[k], cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257
        np.testing.assert_array_equal(
            np.frombuffer(t_msg.data.tobytes(), "<u2").reshape(48, 64), grey
        )
        # bgr8 carries exactly OpenCV's BGR bytes.
        assert (r_msg.encoding, r_msg.step) == ("bgr8", 64 * 3)
        assert r_msg.data.tobytes() == rgb_frames[k].tobytes()
    assert len(set(deviations)) > 1, "jitter was requested but stamps are on the grid"


def test_seed_makes_stamps_reproducible(data_dir, tmp_path):
    thermal_video, rgb_video = clip_paths(data_dir)

    def stamps(name: str, seed: int) -> list[int]:
        out = tmp_path / name
        main(
            [
                str(out),
                "--thermal",
                str(thermal_video),
                "--rgb",
                str(rgb_video),
                "--max-frames",
                "3",
                "--resize",
                "16x12",
                "--jitter-ms",
                "5",
                "--seed",
                str(seed),
            ]
        )
        bag = read_bag(out)
        return [stamp(m) for topic in sorted(bag) for _, m in bag[topic]]

    assert stamps("a", 1) == stamps("b", 1)
    assert stamps("a2", 1) != stamps("c", 2)


def test_image_folders_pair_by_name(data_dir, tmp_path, capsys):
    source = data_dir / "roadscene"
    names = sorted(p.name for p in (source / "ir").glob("*.jpg"))[:3]
    ir, vis = tmp_path / "ir", tmp_path / "vis"
    ir.mkdir()
    vis.mkdir()
    for name in names:
        shutil.copy(source / "ir" / name, ir / name)
    # Same name, other extension: still a pair. A file only on one side is skipped.
    for name in names[:2]:
        shutil.copy(source / "vis" / name, vis / name)
    png = Path(names[2]).with_suffix(".png").name
    cv2.imwrite(str(vis / png), cv2.imread(str(source / "vis" / names[2])))
    shutil.copy(source / "ir" / names[0], ir / "zz_only_thermal.jpg")

    out = tmp_path / "bag"
    assert main([str(out), "--thermal", str(ir), "--rgb", str(vis), "--rate", "5"]) == 0
    assert "1 image(s) without a partner" in capsys.readouterr().err
    bag = read_bag(out)
    assert len(bag["/thermal/image"]) == len(bag["/rgb/image"]) == 3
    for k, name in enumerate(names):
        _, t_msg = bag["/thermal/image"][k]
        _, r_msg = bag["/rgb/image"][k]
        grey = cv2.imread(str(ir / name), cv2.IMREAD_GRAYSCALE)
        rgb_file = vis / (name if k < 2 else png)
        rgb = cv2.cvtColor(cv2.imread(str(rgb_file)), cv2.COLOR_BGR2RGB)
        assert t_msg.encoding == "mono8" and r_msg.encoding == "rgb8"
        assert t_msg.data.tobytes() == grey.tobytes()
        assert r_msg.data.tobytes() == rgb.tobytes()
        assert stamp(r_msg) - stamp(bag["/rgb/image"][0][1]) == k * 200_000_000  # 5 Hz


def test_compressed_png_is_lossless_and_jpeg_decodes(data_dir, tmp_path):
    thermal_video, rgb_video = clip_paths(data_dir)
    thermal_frames = video_frames(thermal_video, 2, SIZE)
    rgb_frames = video_frames(rgb_video, 2, SIZE)
    common = [
        "--thermal",
        str(thermal_video),
        "--rgb",
        str(rgb_video),
        "--max-frames",
        "2",
        "--resize",
        "64x48",
    ]
    png_bag, jpeg_bag = tmp_path / "png", tmp_path / "jpeg"
    assert main([str(png_bag), *common, "--compressed", "png", "--thermal-encoding", "mono16"]) == 0
    assert main([str(jpeg_bag), *common, "--compressed", "jpeg", "--storage", "sqlite3"]) == 0

    bag = read_bag(png_bag)
    assert sorted(bag) == ["/rgb/image/compressed", "/thermal/image/compressed"]
    for k in range(2):
        _, t_msg = bag["/thermal/image/compressed"][k]
        _, r_msg = bag["/rgb/image/compressed"][k]
        assert "png" in t_msg.format and "png" in r_msg.format
        thermal = cv2.imdecode(t_msg.data, cv2.IMREAD_UNCHANGED)
        expected = cv2.cvtColor(thermal_frames[k], cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257
        np.testing.assert_array_equal(thermal, expected)
        np.testing.assert_array_equal(cv2.imdecode(r_msg.data, cv2.IMREAD_COLOR), rgb_frames[k])

    bag = read_bag(jpeg_bag)
    for k in range(2):
        _, r_msg = bag["/rgb/image/compressed"][k]
        assert "jpeg" in r_msg.format
        decoded = cv2.imdecode(r_msg.data, cv2.IMREAD_COLOR).astype(float)
        assert np.abs(decoded - rgb_frames[k]).mean() < 4.0  # lossy, but the same picture


def test_refuses_to_overwrite_and_replaces_when_told(data_dir, tmp_path, capsys):
    thermal_video, rgb_video = clip_paths(data_dir)
    out = tmp_path / "bag"
    args = [str(out), "--thermal", str(thermal_video), "--rgb", str(rgb_video), "--resize", "16x12"]
    assert main([*args, "--max-frames", "2"]) == 0
    before = (out / "metadata.yaml").read_text()
    assert main([*args, "--max-frames", "3"]) == 1
    err = capsys.readouterr().err.strip()
    assert "exists" in err and "--overwrite" in err and len(err.splitlines()) == 1
    assert (out / "metadata.yaml").read_text() == before
    assert main([*args, "--max-frames", "3", "--overwrite"]) == 0
    assert len(read_bag(out)["/rgb/image"]) == 3
    assert not leftovers(out)
    # --overwrite never replaces something that is not a bag.
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert main([str(precious), *args[1:], "--overwrite"]) == 1
    assert (precious / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--compressed", "jpeg", "--thermal-encoding", "mono16"], "use png"),
        (["--rate", "0"], "--rate must be > 0"),
    ],
)
def test_bad_options_are_one_line_errors(data_dir, tmp_path, capsys, extra, message):
    thermal_video, rgb_video = clip_paths(data_dir)
    out = tmp_path / "bag"
    assert main([str(out), "--thermal", str(thermal_video), "--rgb", str(rgb_video), *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists() and not leftovers(out)


def test_bad_sources_are_one_line_errors(data_dir, tmp_path, capsys):
    thermal_video, _ = clip_paths(data_dir)
    out = tmp_path / "bag"
    empty_a, empty_b = tmp_path / "a", tmp_path / "b"
    empty_a.mkdir()
    empty_b.mkdir()
    (empty_a / "x.png").write_bytes(b"not an image")
    (empty_b / "x.png").write_bytes(b"not an image")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00" * 100)
    cases = [
        ([str(tmp_path / "missing.mp4"), str(thermal_video)], "no such file"),
        ([str(thermal_video), str(empty_a)], "two videos or two image folders"),
        ([str(empty_a), str(tmp_path)], "no image file names in common"),
        ([str(empty_a), str(empty_b)], "cannot read as an image"),
        ([str(garbage), str(garbage)], "garbage.mp4"),
    ]
    for (thermal, rgb), message in cases:
        assert main([str(out), "--thermal", thermal, "--rgb", rgb]) == 1
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
        assert not out.exists() and not leftovers(out)
    with pytest.raises(SystemExit):
        main(
            [
                str(out),
                "--thermal",
                str(thermal_video),
                "--rgb",
                str(thermal_video),
                "--resize",
                "64by48",
            ]
        )
