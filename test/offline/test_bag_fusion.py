"""gifnet-fuse-bag on real bags built from the shared M3SVD clip, read back with rosbags.

The network costs about two seconds per pair on CPU whatever the image size, so every bag here
has two to six small (64x48) frames, and error paths stop before the model runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from bag_helpers import (
    STORE,
    build,
    clip_paths,
    decoded,
    leftovers,
    signal_when,
    stamp,
    video_frames,
)
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from gifnet_ros.fusion.engine import FusionEngine
from gifnet_ros.fusion.thermal import DEFAULT_TIME_CONSTANT
from gifnet_ros.offline.bag_io import OWNER_FILE
from gifnet_ros.tools import fuse_bag as bag_tool
from gifnet_ros.tools import make_bag

pytestmark = pytest.mark.shared

THERMAL, RGB, FUSED = "/thermal/image", "/rgb/image", "/fused/image"


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip(data_dir: Path) -> tuple[Path, Path]:
    return clip_paths(data_dir)


def rewrite(
    src: Path, dst: Path, edit: Callable[[str, int, int, bytes], Iterable[tuple[int, bytes]]]
) -> Path:
    """Copy a bag through edit(topic, index in topic, recorded, raw) -> [(recorded, raw)]."""
    with Reader(src) as reader, Writer(dst, version=8, storage_plugin=StoragePlugin.MCAP) as out:
        conns = {
            c.id: out.add_connection(c.topic, c.msgtype, typestore=STORE)
            for c in reader.connections
        }
        seen: dict[str, int] = {}
        for conn, recorded, raw in reader.messages():
            index = seen.get(conn.topic, 0)
            seen[conn.topic] = index + 1
            for new_recorded, new_raw in edit(conn.topic, index, recorded, raw):
                out.write(conns[conn.id], new_recorded, new_raw)
    return dst


def raw_messages(path: Path) -> dict[str, list[tuple[int, bytes]]]:
    topics: dict[str, list[tuple[int, bytes]]] = {}
    with Reader(path) as reader:
        for conn, recorded, raw in reader.messages():
            topics.setdefault(conn.topic, []).append((recorded, bytes(raw)))
    return topics


def pixels(msg) -> np.ndarray:
    channels = 1 if msg.encoding == "mono8" else 3
    image = np.frombuffer(msg.data.tobytes(), np.uint8).reshape(msg.height, msg.width, channels)
    return image[..., 0] if channels == 1 else image


def metadata(path: Path) -> dict:
    return yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]


def tool_args(bag: Path, out: Path, weights: Path, *extra: str, report: Path | None = None):
    """gifnet-fuse-bag's arguments for the test bags' topics, on the CPU in fp32 (the
    reference engine's precision)."""
    args = [
        str(bag),
        "-o",
        str(out),
        "--thermal-topic",
        THERMAL,
        "--rgb-topic",
        RGB,
        "--weights",
        str(weights),
        "--device",
        "cpu",
        "--precision",
        "fp32",
        *extra,
    ]
    return args if report is None else [*args, "--report", str(report)]


def fuse(bag: Path, out: Path, weights: Path, *extra: str, report: Path | None = None) -> int:
    return bag_tool.main(tool_args(bag, out, weights, "--no-progress", *extra, report=report))


# -- round trips -----------------------------------------------------------------------------


def test_round_trip_mcap_directory(clip, tmp_path, weights_path, engine):
    n = 3
    bag = build(
        clip,
        tmp_path / "in",
        n,
        "--thermal-encoding",
        "mono16",
        "--jitter-ms",
        "3",
        "--thermal-offset-ms",
        "7",
    )
    out, report_path = tmp_path / "out", tmp_path / "report.json"
    assert fuse(bag, out, weights_path, report=report_path) == 0
    assert not leftovers(out)

    info = metadata(out)
    assert info["version"] == 8 and info["storage_identifier"] == "mcap"
    assert {
        t["topic_metadata"]["name"]: (t["topic_metadata"]["type"], t["message_count"])
        for t in info["topics_with_message_count"]
    } == {
        THERMAL: ("sensor_msgs/msg/Image", n),
        RGB: ("sensor_msgs/msg/Image", n),
        FUSED: ("sensor_msgs/msg/Image", n),
    }
    # Copied topics are the input messages byte for byte, at their recording times.
    before, after = raw_messages(bag), raw_messages(out)
    assert after[THERMAL] == before[THERMAL] and after[RGB] == before[RGB]

    rgb_in = decoded(bag, RGB)
    fused = decoded(out, FUSED)
    for (rgb_recorded, rgb_msg), (fused_recorded, fused_msg) in zip(rgb_in, fused, strict=True):
        assert fused_recorded == rgb_recorded
        assert stamp(fused_msg) == stamp(rgb_msg)
        assert fused_msg.header.frame_id == "rgb_camera"
        assert (fused_msg.encoding, fused_msg.width, fused_msg.height) == ("rgb8", 64, 48)

    # A sampled pair equals the engine's fusion of the frames decoded from the videos, the
    # 16-bit thermal stretched as the default does: the percentile range of frame 0 moved
    # towards frame 1's own by 1 - exp(-dt / time constant), dt from the bag's thermal stamps.
    k = 1
    thermal16 = [
        cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257
        for frame in video_frames(clip[0], n)[: k + 1]
    ]
    own = [np.percentile(t.astype(np.float32), (1.0, 99.0)).astype(np.float64) for t in thermal16]
    dt = (stamp(decoded(bag, THERMAL)[k][1]) - stamp(decoded(bag, THERMAL)[0][1])) / 1e9
    lo, hi = own[0] + (1.0 - np.exp(-dt / DEFAULT_TIME_CONSTANT)) * (own[1] - own[0])
    scaled = (thermal16[k].astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    stretched = np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)
    rgb_frame = video_frames(clip[1], n)[k]
    expected = engine.fuse(stretched, cv2.cvtColor(rgb_frame, cv2.COLOR_BGR2RGB))
    np.testing.assert_array_equal(pixels(fused[k][1]), expected)

    report = json.loads(report_path.read_text())
    assert report["status"] == "complete" and report["output_written"]
    assert report["pairs"] == {"planned": n, "fused": n, "skipped": 0, "frozen": 0, "held": 0}
    assert report["unpaired_rgb"] == {"count": 0, "stamps_ns": []}
    assert report["unpaired_thermal"] == {"count": 0, "stamps_ns": []}
    assert report["topics"] == {
        THERMAL: {"type": "sensor_msgs/msg/Image", "messages": n, "messages_read": n},
        RGB: {"type": "sensor_msgs/msg/Image", "messages": n, "messages_read": n},
    }
    assert report["output_topics"] == {THERMAL: n, RGB: n, FUSED: n}
    thermal_in = decoded(bag, THERMAL)
    diffs = sorted(
        (stamp(t) - stamp(r)) / 1e6 for (_, t), (_, r) in zip(thermal_in, rgb_in, strict=True)
    )
    assert report["stamp_difference_ms"]["median"] == pytest.approx(diffs[1])
    assert report["stamp_difference_ms"]["max_abs"] == pytest.approx(max(map(abs, diffs)))
    assert report["peak_buffered_messages"] <= 2  # one partner waits, never the whole bag
    assert report["timing"]["pairs_per_s"] > 0
    assert 0 < report["timing"]["model_share"] <= 1


def test_round_trip_sqlite3_single_file_bgr8(clip, tmp_path, weights_path, engine):
    n = 2
    bag = build(clip, tmp_path / "in", n, "--storage", "sqlite3", "--rgb-encoding", "bgr8")
    out = tmp_path / "out"
    assert (
        fuse(
            bag / "in.db3",
            out,
            weights_path,
            "--storage",
            "sqlite3",
            "--copy-topics",
            "none",
            "--fused-encoding",
            "bgr8",
        )
        == 0
    )
    info = metadata(out)
    assert info["storage_identifier"] == "sqlite3"
    assert [t["topic_metadata"]["name"] for t in info["topics_with_message_count"]] == [FUSED]
    fused = decoded(out, FUSED)
    assert [stamp(m) for _, m in fused] == [stamp(m) for _, m in decoded(bag, RGB)]
    k = 1
    grey = cv2.cvtColor(video_frames(clip[0], n)[k], cv2.COLOR_BGR2GRAY)
    rgb = cv2.cvtColor(video_frames(clip[1], n)[k], cv2.COLOR_BGR2RGB)
    assert fused[k][1].encoding == "bgr8"
    np.testing.assert_array_equal(pixels(fused[k][1])[..., ::-1], engine.fuse(grey, rgb))


def test_classic_backend_fuses_a_bag_without_weights(clip, tmp_path):
    """--backend classic_laplacian: no checkpoint is looked for (the --weights path does not
    exist); each fused image is the engine's classic rule on the same frames."""
    n = 2
    bag = build(clip, tmp_path / "in", n)
    out, report = tmp_path / "out", tmp_path / "report.json"
    missing = tmp_path / "no.model"
    code = fuse(
        bag, out, missing, "--backend", "classic_laplacian", "--copy-topics", "none", report=report
    )
    assert code == 0
    assert json.loads(report.read_text())["settings"]["backend"] == "classic_laplacian"
    fused = decoded(out, FUSED)
    rule = FusionEngine(backend="classic_laplacian")
    thermal, rgb = video_frames(clip[0], n), video_frames(clip[1], n)
    for k in range(n):
        grey = cv2.cvtColor(thermal[k], cv2.COLOR_BGR2GRAY)
        colour = cv2.cvtColor(rgb[k], cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(pixels(fused[k][1]), rule.fuse(grey, colour))


def test_compressed_inputs_mono8_output(clip, tmp_path, weights_path, engine):
    n = 2
    bag = build(clip, tmp_path / "in", n, "--compressed", "jpeg")
    out = tmp_path / "out"
    args = ["--copy-topics", f"{RGB}/compressed", "--fused-encoding", "mono8"]
    assert (
        bag_tool.main(
            [
                str(bag),
                "-o",
                str(out),
                "--thermal-topic",
                f"{THERMAL}/compressed",
                "--rgb-topic",
                f"{RGB}/compressed",
                "--weights",
                str(weights_path),
                "--device",
                "cpu",
                "--precision",
                "fp32",
                "--no-progress",
                *args,
            ]
        )
        == 0
    )
    assert sorted(raw_messages(out)) == [FUSED, f"{RGB}/compressed"]
    k = 0
    _, thermal_msg = decoded(bag, f"{THERMAL}/compressed")[k]
    _, rgb_msg = decoded(bag, f"{RGB}/compressed")[k]
    thermal = cv2.imdecode(thermal_msg.data, cv2.IMREAD_GRAYSCALE)
    rgb = cv2.cvtColor(cv2.imdecode(rgb_msg.data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    luminance, _ = engine.fuse_luminance(thermal, rgb)
    fused_msg = decoded(out, FUSED)[k][1]
    assert fused_msg.encoding == "mono8"
    np.testing.assert_array_equal(pixels(fused_msg), luminance)


def test_pairs_by_stamp_with_dropped_duplicated_and_late_frames(
    clip, tmp_path, weights_path, engine
):
    """Thermal frame 1 and RGB frame 3 dropped, thermal frame 4 sent twice, and every thermal
    message recorded 300 ms late (after later RGB frames): pairing must follow the stamps."""
    n = 6
    source = build(clip, tmp_path / "src", n, "--jitter-ms", "2", "--thermal-offset-ms", "5")

    def edit(topic: str, index: int, recorded: int, raw: bytes):
        if topic == THERMAL:
            if index == 1:
                return []
            late = recorded + 300_000_000
            return [(late, raw), (late + 1_000_000, raw)] if index == 4 else [(late, raw)]
        return [] if index == 3 else [(recorded, raw)]

    bag = rewrite(source / "src.mcap", tmp_path / "in", edit)
    out, report_path = tmp_path / "out", tmp_path / "report.json"
    assert (
        fuse(bag, out, weights_path, "--slop", "0.015", "--copy-topics", "none", report=report_path)
        == 0
    )

    rgb_src = decoded(source, RGB)
    thermal_src = decoded(source, THERMAL)
    paired_frames = [0, 2, 4, 5]
    fused = decoded(out, FUSED)
    assert [stamp(m) for _, m in fused] == [stamp(rgb_src[k][1]) for k in paired_frames]
    assert [t for t, _ in fused] == [rgb_src[k][0] for k in paired_frames]
    report = json.loads(report_path.read_text())
    assert report["pairs"]["fused"] == 4
    assert report["unpaired_rgb"]["stamps_ns"] == [stamp(rgb_src[1][1])]
    assert report["unpaired_thermal"]["stamps_ns"] == [
        stamp(thermal_src[3][1]),
        stamp(thermal_src[4][1]),
    ]
    assert report["topics"][THERMAL]["messages"] == 6 and report["topics"][RGB]["messages"] == 5
    # The last pair went through drops and a duplicate: still frame 5 with frame 5.
    grey = cv2.cvtColor(video_frames(clip[0], n)[5], cv2.COLOR_BGR2GRAY)
    rgb = cv2.cvtColor(video_frames(clip[1], n)[5], cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(pixels(fused[3][1]), engine.fuse(grey, rgb))


def test_batches_write_the_same_bag(clip, tmp_path, weights_path):
    """--batch 3 fuses runs of three pairs in one network call (and the last, shorter run);
    the fused images and every other message are those of one pair at a time, in order."""
    bag = build(clip, tmp_path / "in", 5, "--jitter-ms", "2")
    reports = {}
    for batch in ("1", "3"):
        report = tmp_path / f"report{batch}.json"
        assert fuse(bag, tmp_path / batch, weights_path, "--batch", batch, report=report) == 0
        reports[batch] = json.loads(report.read_text())
    assert raw_messages(tmp_path / "3") == raw_messages(tmp_path / "1")
    assert reports["3"]["settings"]["batch"] == 3 and reports["1"]["settings"]["batch"] == 1
    assert reports["3"]["pairs"] == {"planned": 5, "fused": 5, "skipped": 0, "frozen": 0, "held": 0}


# -- failures --------------------------------------------------------------------------------


def test_corrupt_message_stops_or_is_skipped(clip, tmp_path, weights_path, capsys):
    source = build(clip, tmp_path / "src", 2)

    def edit(topic: str, index: int, recorded: int, raw: bytes):
        return [(recorded, raw[:80] if topic == RGB and index == 1 else raw)]

    bag = rewrite(source / "src.mcap", tmp_path / "in", edit)
    out, report_path = tmp_path / "out", tmp_path / "report.json"
    assert fuse(bag, out, weights_path, report=report_path) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{RGB} message 1" in err and "corrupt" in err and "after fusing 1 of 2" in err
    assert not out.exists() and not leftovers(out)
    report = json.loads(report_path.read_text())
    assert report["status"] == "error" and f"{RGB} message 1" in report["error"]
    assert report["pairs"]["fused"] == 1 and not report["output_written"]

    assert fuse(bag, out, weights_path, "--skip-bad", report=report_path) == 0
    report = json.loads(report_path.read_text())
    assert report["pairs"] == {"planned": 2, "fused": 1, "skipped": 1, "frozen": 0, "held": 0}
    assert "corrupt" in report["skipped"][0]["reason"]
    assert len(decoded(out, FUSED)) == 1


def truncated(path: Path, dst: Path) -> Path:
    data = path.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


@pytest.mark.parametrize("kind", ["mcap", "db3", "garbage", "directory"])
def test_corrupt_or_truncated_bag_is_a_one_line_error(clip, tmp_path, capsys, kind):
    storage = "sqlite3" if kind == "db3" else "mcap"
    source = build(clip, tmp_path / "src", 2, "--storage", storage)
    if kind == "mcap":
        bag = truncated(source / "src.mcap", tmp_path / "cut.mcap")
    elif kind == "db3":
        bag = truncated(source / "src.db3", tmp_path / "cut.db3")
    elif kind == "garbage":
        bag = tmp_path / "noise.mcap"
        bag.write_bytes(np.random.default_rng(0).bytes(4096))
    else:
        truncated(source / "src.mcap", source / "src.mcap.cut")
        os.replace(source / "src.mcap.cut", source / "src.mcap")
        bag = source
    out, report_path = tmp_path / "out", tmp_path / "report.json"
    code = fuse(bag, out, Path("unused-because-it-fails-first"), report=report_path)
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1 and str(bag) in err, err
    assert not out.exists() and not leftovers(out)
    assert json.loads(report_path.read_text())["status"] == "error"


def test_missing_topic_lists_the_topics(clip, tmp_path, capsys):
    bag = build(clip, tmp_path / "in", 1)
    code = bag_tool.main(
        [str(bag), "-o", str(tmp_path / "out"), "--thermal-topic", "/ir", "--rgb-topic", RGB]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "'/ir'" in err and f"{RGB} (sensor_msgs/msg/Image)" in err and THERMAL in err


def test_wrong_message_type(clip, tmp_path, capsys):
    source = build(clip, tmp_path / "src", 1)
    bag = tmp_path / "in"
    with Reader(source) as reader, Writer(bag, version=8) as writer:
        conns = {
            c.id: writer.add_connection(c.topic, c.msgtype, typestore=STORE)
            for c in reader.connections
        }
        for conn, recorded, raw in reader.messages():
            writer.write(conns[conn.id], recorded, raw)
        text = writer.add_connection("/label", "std_msgs/msg/String", typestore=STORE)
        msg = STORE.types["std_msgs/msg/String"](data="hello")
        writer.write(text, 1, STORE.serialize_cdr(msg, "std_msgs/msg/String"))
    code = bag_tool.main(
        [str(bag), "-o", str(tmp_path / "out"), "--thermal-topic", THERMAL, "--rgb-topic", "/label"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "/label has type std_msgs/msg/String" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--copy-topics", "/nope,/rgb/image"], "not in the bag: /nope"),
        (["--fused-topic", RGB], "also a copied input topic"),
        (["--slop", "-1"], "--slop must be >= 0"),
        (["--thermal-percentiles", "50", "10"], "percentiles"),
    ],
)
def test_bad_settings(clip, tmp_path, capsys, extra, message):
    bag = build(clip, tmp_path / "in", 1)
    out = tmp_path / "out"
    assert fuse(bag, out, Path("unused"), *extra) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists() and not leftovers(out)


def test_overwrite_refused_then_allowed(clip, tmp_path, weights_path, capsys):
    # A thermal offset beyond the slop: no pairs, so this exercises the bag handling only.
    bag = build(clip, tmp_path / "in", 2, "--thermal-offset-ms", "20")
    out = build(clip, tmp_path / "out", 1)
    before = (out / "metadata.yaml").read_text()
    assert fuse(bag, out, weights_path, "--slop", "0.01") == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "metadata.yaml").read_text() == before
    assert fuse(bag, bag, weights_path, "--overwrite") == 1
    assert "same" in capsys.readouterr().err

    report_path = tmp_path / "report.json"
    assert fuse(bag, out, weights_path, "--slop", "0.01", "--overwrite", report=report_path) == 0
    counts = {
        t["topic_metadata"]["name"]: t["message_count"]
        for t in metadata(out)["topics_with_message_count"]
    }
    assert counts == {THERMAL: 2, RGB: 2, FUSED: 0}
    report = json.loads(report_path.read_text())
    assert report["pairs"]["planned"] == 0
    assert report["unpaired_rgb"]["count"] == report["unpaired_thermal"]["count"] == 2
    assert not leftovers(out)


def test_directory_without_metadata_reads_its_one_file(clip, tmp_path, weights_path, capsys):
    bag = build(clip, tmp_path / "in", 1, "--thermal-offset-ms", "20")
    (bag / "metadata.yaml").unlink()
    out = tmp_path / "out"
    assert fuse(bag, out, weights_path, "--slop", "0.01") == 0
    assert "no metadata.yaml; reading in.mcap" in capsys.readouterr().err
    assert sorted(raw_messages(out)[RGB]) == sorted(raw_messages(bag / "in.mcap")[RGB])


# -- interruption ----------------------------------------------------------------------------


def run_tool(args: list[str], **options) -> subprocess.CompletedProcess:
    """gifnet-fuse-bag in a child process to its end; its output as text."""
    command = [sys.executable, "-m", "gifnet_ros.tools.fuse_bag", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, **options)


def start_tool(args: list[str]) -> subprocess.Popen:
    """gifnet-fuse-bag in a child process: the installed console script when there is one
    (pip/colcon install), else the module."""
    script = Path(sys.executable).with_name("gifnet-fuse-bag")
    command = (
        [str(script)] if script.exists() else [sys.executable, "-m", "gifnet_ros.tools.fuse_bag"]
    )
    return subprocess.Popen([*command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_leaves_nothing_at_output(clip, tmp_path, weights_path, signum):
    n = 12
    # 320x256 frames take the model about a second each on a CPU, so the signal surely
    # arrives mid-run (at 64x48 the other 11 pairs could be done before it is handled).
    bag = build(clip, tmp_path / "in", n, "--resize", "320x256")
    out, report_path = tmp_path / "out", tmp_path / "report.json"
    process = start_tool(tool_args(bag, out, weights_path, report=report_path))
    err = signal_when(process, f" 1/{n} ".encode(), signum, timeout=120)
    assert process.returncode == 130, err.decode()[-3000:]
    assert not out.exists() and not leftovers(out)
    assert b"nothing written to" in err
    report = json.loads(report_path.read_text())
    assert report["status"] == "interrupted" and not report["output_written"]
    assert 1 <= report["pairs"]["fused"] < n
    assert report["last_fused_rgb_stamp_ns"] is not None


def test_a_killed_runs_leftover_is_removed_and_a_live_runs_kept(clip, tmp_path, weights_path):
    """SIGKILL leaves the hidden folder behind (nothing can clean up); the next run removes
    it because its recorded process is gone, and keeps one whose process still runs."""
    n = 12
    bag = build(clip, tmp_path / "in", n, "--resize", "320x256")
    out = tmp_path / "out"
    process = start_tool(tool_args(bag, out, weights_path))
    signal_when(process, f" 1/{n} ".encode(), signal.SIGKILL, timeout=120)
    [dead] = leftovers(out)
    owner = json.loads((dead / OWNER_FILE).read_text())
    assert owner["pid"] == process.pid
    # A folder as a live run writes it: this test's own process is its owner.
    live = out.parent / f".{out.name}.live.partial"
    live.mkdir()
    record = {**owner, "pid": os.getpid(), "start": None}
    (live / OWNER_FILE).write_text(json.dumps(record))

    extra = ("--backend", "classic_max", "--no-progress")
    result = run_tool(tool_args(bag, out, weights_path, *extra, report=tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert not dead.exists() and live.is_dir()
    assert f"removed {dead}, left by pid {process.pid}" in result.stderr
    assert f"kept {live}: pid {os.getpid()} is still writing it" in result.stderr
    assert leftovers(out) == [live]
    assert len(json.loads((tmp_path / "r.json").read_text())["leftovers"]) == 2
    assert (out / "metadata.yaml").is_file()


# -- storage that lies or fails ---------------------------------------------------------------


def test_metadata_that_lies_about_counts_and_duration(clip, tmp_path, weights_path, capsys):
    """Pairing uses what the storage holds; the report and a warning show both figures."""
    bag = build(clip, tmp_path / "in", 2)
    meta_path = bag / "metadata.yaml"
    document = yaml.safe_load(meta_path.read_text())
    info = document["rosbag2_bagfile_information"]
    info["message_count"] *= 10
    info["duration"]["nanoseconds"] = 10**15
    for topic in info["topics_with_message_count"]:
        topic["message_count"] = 20
    meta_path.write_text(yaml.safe_dump(document))
    out, report_path = tmp_path / "out", tmp_path / "report.json"
    assert fuse(bag, out, weights_path, report=report_path) == 0
    err = capsys.readouterr().err
    assert f"says 20 messages on {THERMAL}, its storage holds 2" in err
    report = json.loads(report_path.read_text())
    assert report["pairs"] == {"planned": 2, "fused": 2, "skipped": 0, "frozen": 0, "held": 0}
    assert report["topics"][RGB]["messages"] == 20 and report["topics"][RGB]["messages_read"] == 2
    assert len(decoded(out, FUSED)) == 2


def test_metadata_naming_a_missing_storage_file(clip, tmp_path, capsys):
    bag = build(clip, tmp_path / "in", 1)
    meta_path = bag / "metadata.yaml"
    document = yaml.safe_load(meta_path.read_text())
    info = document["rosbag2_bagfile_information"]
    info["relative_file_paths"].append("in_1.mcap")
    info["files"].append({**info["files"][0], "path": "in_1.mcap"})
    meta_path.write_text(yaml.safe_dump(document))
    out, report_path = tmp_path / "out", tmp_path / "report.json"
    code = fuse(bag, out, Path("unused"), report=report_path)
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert str(bag) in err and "in_1.mcap" in err, err
    assert not out.exists() and not leftovers(out)
    assert json.loads(report_path.read_text())["status"] == "error"


def test_file_size_limit_while_writing_leaves_no_output(clip, tmp_path, weights_path):
    """A full disk, simulated by RLIMIT_FSIZE on the tool's process: one line, nothing at
    OUTPUT, and the report (smaller than the limit) says how far the run got."""
    import resource

    n = 3
    bag = build(clip, tmp_path / "in", n)
    input_size = sum(p.stat().st_size for p in bag.iterdir())
    limit = input_size // 2  # the output holds the inputs (copied) and the fused images

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out, report_path = tmp_path / "out", tmp_path / "report.json"
    result = run_tool(
        tool_args(bag, out, weights_path, "--no-progress", report=report_path),
        preexec_fn=limit_file_size,
    )
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "writing the bag failed" in lines[0], result.stderr[-2000:]
    assert "File too large" in lines[0] and str(out) in lines[0]
    assert not out.exists() and not leftovers(out)
    report = json.loads(report_path.read_text())
    assert report["status"] == "error" and not report["output_written"]
    assert report["pairs"]["planned"] == n and 0 <= report["pairs"]["fused"] <= n


# -- real cameras: clock offset, frozen frames, compressed output -----------------------------


def test_thermal_offset_pairs_a_lagging_camera_with_the_right_frames(
    clip, tmp_path, weights_path, engine
):
    """Thermal stamps 0.2 s late (a host-stamped driver): without the offset the nearest
    stamps are other frames; --thermal-offset -0.2 pairs frame k with frame k."""
    n = 10
    bag = build(clip, tmp_path / "in", n, "--thermal-offset-ms", "200")
    thermal = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in video_frames(clip[0], n)]
    rgb = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in video_frames(clip[1], n)]
    right, report = tmp_path / "right", tmp_path / "right.json"
    assert fuse(bag, right, weights_path, "--thermal-offset", "-0.2", report=report) == 0
    fused = decoded(right, FUSED)
    assert len(fused) == n
    for k in (0, n - 1):
        np.testing.assert_array_equal(pixels(fused[k][1]), engine.fuse(thermal[k], rgb[k]))
    assert json.loads(report.read_text())["settings"]["thermal_offset_s"] == -0.2
    wrong = tmp_path / "wrong"
    assert fuse(bag, wrong, weights_path) == 0
    last = decoded(wrong, FUSED)[-1][1]
    assert not np.array_equal(pixels(last), engine.fuse(thermal[n - 1], rgb[n - 1]))


def _frozen_bag(clip: tuple[Path, Path], tmp_path: Path) -> Path:
    """Five pairs at 10 Hz whose thermal frames 1..3 are one image (a shutter pause)."""
    thermal_dir, rgb_dir = tmp_path / "thermal", tmp_path / "rgb"
    thermal_dir.mkdir()
    rgb_dir.mkdir()
    thermal, rgb = video_frames(clip[0], 5), video_frames(clip[1], 5)
    for k, source in enumerate((0, 1, 1, 1, 4)):
        cv2.imwrite(str(thermal_dir / f"{k}.png"), thermal[source])
        cv2.imwrite(str(rgb_dir / f"{k}.png"), rgb[k])
    bag = tmp_path / "frozen"
    args = [str(bag), "--thermal", str(thermal_dir), "--rgb", str(rgb_dir), "--rate", "10"]
    assert make_bag.main(args) == 0
    return bag


@pytest.mark.parametrize(
    "extra, fused, frozen, held",
    [
        ((), [0, 1, 4], 2, 0),  # the default: skip the repeats
        (("--freeze-action", "hold"), [0, 1, 2, 3, 4], 0, 2),
        (("--freeze-action", "hold", "--freeze-max-age", "0.15"), [0, 1, 2, 4], 1, 1),
        (("--freeze-action", "ignore"), [0, 1, 2, 3, 4], 0, 0),
    ],
)
def test_frozen_thermal_frames(clip, tmp_path, extra, fused, frozen, held):
    bag = _frozen_bag(clip, tmp_path)
    out, report_path = tmp_path / "out", tmp_path / "report.json"
    args = ["--backend", "classic_average", *extra]
    assert fuse(bag, out, tmp_path / "no.model", *args, report=report_path) == 0
    stamps = [stamp(msg) for _, msg in decoded(bag, RGB)]
    assert [stamp(msg) for _, msg in decoded(out, FUSED)] == [stamps[k] for k in fused]
    report = json.loads(report_path.read_text())
    assert report["pairs"] == {
        "planned": 5,
        "fused": len(fused),
        "skipped": 0,
        "frozen": frozen,
        "held": held,
    }
    skipped = [entry["rgb_stamp_ns"] for entry in report["skipped"]]
    assert skipped == [s for k, s in enumerate(stamps) if k not in fused]
    assert all("repeats the thermal image" in entry["reason"] for entry in report["skipped"])


def test_compressed_output_next_to_the_fused_image(clip, tmp_path, weights_path):
    bag = build(clip, tmp_path / "in", 3)
    out = tmp_path / "out"
    assert fuse(bag, out, weights_path, "--fused-compressed", "png") == 0
    fused, packed = decoded(out, FUSED), decoded(out, FUSED + "/compressed")
    assert len(packed) == len(fused) == 3
    for (recorded, image), (packed_recorded, compressed) in zip(fused, packed, strict=True):
        assert (packed_recorded, stamp(compressed)) == (recorded, stamp(image))
        assert compressed.format == "rgb8; png compressed bgr8"
        bgr = cv2.imdecode(np.frombuffer(bytes(compressed.data), np.uint8), cv2.IMREAD_COLOR)
        np.testing.assert_array_equal(bgr[..., ::-1], pixels(image))
