"""gifnet-fuse-bags on a real local Ray cluster (2 CPUs, so 2 model workers) and real bags.

The reference for every output is gifnet-fuse-bag run on the same input with the same options:
the files must be identical byte for byte. Ray starts once for the module. Tests about
transport use a classical backend (milliseconds per pair); one uses GIFNet at 64x48.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import ray
from bag_helpers import build, clip_paths, signal_when, video_frames
from fleet_helpers import (
    CLASSIC,
    dead_address,
    files,
    fuse_bags,
    hidden,
    reference,
    run_tool,
    tool,
    topics,
)
from ray_head import own_sessions_removed

from gifnet_ros.offline import fleet, fleet_cluster
from gifnet_ros.offline.bag_io import OWNER_FILE
from gifnet_ros.tools import make_bag

pytestmark = [pytest.mark.ray, pytest.mark.shared]


@pytest.fixture(scope="module")
def cluster():
    """One local Ray for the module: 2 CPUs, as the tool would use on this machine. Without
    token authentication: Ray would otherwise write a token to ~/.ray and set RAY_AUTH_MODE
    in this process for the modules after this one. Its session folder is removed after."""
    with pytest.MonkeyPatch.context() as env, own_sessions_removed():
        env.setenv("RAY_AUTH_MODE", "disabled")
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=fleet_cluster.LOCAL_OBJECT_STORE,
        )
        yield ray.get_runtime_context().gcs_address
        ray.shutdown()


@pytest.fixture(scope="module")
def clip(data_dir: Path) -> tuple[Path, Path]:
    return clip_paths(data_dir)


# -- outputs -----------------------------------------------------------------------------------


def test_outputs_are_gifnet_fuse_bags_bytes_with_gifnet(cluster, clip, tmp_path, weights_path):
    """GIFNet itself, on a searched folder holding an mcap bag, a sqlite3 bag and a loose
    .mcap file: each output is the bag gifnet-fuse-bag writes, and its report is complete."""
    inputs = tmp_path / "drives"
    for day in ("day1", "day2"):
        (inputs / day).mkdir(parents=True)
    build(clip, inputs / "day1" / "cam", 2, "--thermal-encoding", "mono16", "--jitter-ms", "3")
    build(clip, inputs / "day2" / "cam", 2, "--storage", "sqlite3", "--thermal-offset-ms", "4")
    loose = build(clip, tmp_path / "loose", 2)
    os.replace(loose / "loose.mcap", inputs / "extra.mcap")
    options = ("--weights", str(weights_path), "--device", "cpu", "--threads", "1")

    code, summary = fuse_bags([inputs], tmp_path / "out", *options)

    assert code == 0, summary
    assert summary["bags"] == {"complete": 3}
    assert summary["pairs_fused"] == 6
    for name, source in [
        ("day1/cam", inputs / "day1" / "cam"),
        ("day2/cam", inputs / "day2" / "cam"),
        ("extra", inputs / "extra.mcap"),
    ]:
        expected = reference(source, tmp_path / "ref" / name, *options)
        assert files(tmp_path / "out" / name) == files(expected), name
        report = json.loads((tmp_path / "out" / f"{name}.report.json").read_text())
        assert report["status"] == "complete" and report["pairs"]["fused"] == 2
    assert not hidden(tmp_path / "out")


def test_long_bag_is_split_over_both_workers(cluster, clip, tmp_path):
    """One bag, many pairs, every topic copied, in runs of 3 pairs (--batch): both workers
    fuse part of it and the single writer still puts every message where gifnet-fuse-bag
    puts it."""
    bag = build(clip, tmp_path / "long", 40, "--jitter-ms", "2", "--thermal-offset-ms", "3")
    code, summary = fuse_bags([bag], tmp_path / "out", *CLASSIC, "--batch", "3")
    assert code == 0, summary
    assert [w["pairs"] > 0 for w in summary["workers"]] == [True, True]
    assert sum(w["pairs"] for w in summary["workers"]) == 40
    expected = reference(bag, tmp_path / "ref" / "long", *CLASSIC, "--batch", "3")
    assert files(tmp_path / "out" / "long") == files(expected)


def test_real_camera_options_write_gifnet_fuse_bags_bytes(cluster, clip, tmp_path):
    """A mono16 camera 120 ms late with a shutter pause (thermal frames 2-4 one image), split
    over both workers: the offset, the stretch over time (made by the driver in stamp order,
    carried by each pair) and the frozen pairs give the bag gifnet-fuse-bag writes."""
    thermal_dir, rgb_dir = tmp_path / "thermal", tmp_path / "rgb"
    thermal_dir.mkdir()
    rgb_dir.mkdir()
    thermal, rgb = video_frames(clip[0], 12), video_frames(clip[1], 12)
    for k in range(12):
        cv2.imwrite(str(thermal_dir / f"{k:02d}.png"), thermal[2 if 2 <= k <= 4 else k])
        cv2.imwrite(str(rgb_dir / f"{k:02d}.png"), rgb[k])
    bag = tmp_path / "cam"
    assert (
        make_bag.main(
            [str(bag), "--thermal", str(thermal_dir), "--rgb", str(rgb_dir), "--rate", "10",
             "--thermal-encoding", "mono16", "--thermal-offset-ms", "120", "--jitter-ms", "2"]
        )
        == 0
    )  # fmt: skip
    options = (*CLASSIC, "--batch", "2", "--thermal-offset", "-0.12", "--fused-compressed", "jpeg")
    code, summary = fuse_bags([bag], tmp_path / "out", *options)
    assert code == 0, summary
    assert [w["pairs"] > 0 for w in summary["workers"]] == [True, True]
    expected = reference(bag, tmp_path / "ref" / "cam", *options)
    assert files(tmp_path / "out" / "cam") == files(expected)
    report = json.loads((tmp_path / "out" / "cam.report.json").read_text())
    assert report["pairs"] == {"planned": 12, "fused": 10, "skipped": 0, "frozen": 2, "held": 0}


# -- resume ------------------------------------------------------------------------------------


def test_second_run_skips_complete_bags_and_redoes_the_rest(cluster, clip, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a", "b", "c"):
        build(clip, inputs / name, 3)
    out = tmp_path / "out"
    code, _ = fuse_bags([inputs], out, *CLASSIC)
    assert code == 0
    done_a = (out / "a" / "a.mcap").stat().st_mtime_ns
    expected_b = files(out / "b")
    # b as a run killed after its bag was renamed but before its report was written; c's
    # run killed mid-way: its hidden folder is left, owned by a process that is gone.
    (out / "b.report.json").unlink()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    partial = out / ".c.x1y2.partial"
    partial.mkdir()
    (partial / OWNER_FILE).write_text(
        json.dumps({"host": os.uname().nodename, "pid": int(dead.stdout), "start": None})
    )
    (partial / "c").mkdir()
    (out / "c.report.json").unlink()
    for item in (out / "c").iterdir():
        item.unlink()
    (out / "c").rmdir()

    code, summary = fuse_bags([inputs], out, *CLASSIC)

    assert code == 0, summary
    assert summary["bags"] == {"complete": 2, "skipped": 1}
    status = {Path(e["input"]).name: e["status"] for e in summary["inputs"]}
    assert status == {"a": "skipped", "b": "complete", "c": "complete"}
    assert (out / "a" / "a.mcap").stat().st_mtime_ns == done_a
    assert files(out / "b") == expected_b
    assert not partial.exists() and len(summary["leftovers"]) == 1
    assert (
        "removed" in summary["leftovers"][0] and str(dead.stdout.strip()) in summary["leftovers"][0]
    )
    assert not hidden(out)

    # Other settings: the complete bags are not silently reused, nor silently replaced.
    code, summary = fuse_bags([inputs / "a"], out, "--backend", "classic_max")
    assert code == 1
    assert (
        "backend" in summary["inputs"][0]["error"]
        and "--overwrite" in summary["inputs"][0]["error"]
    )
    assert (out / "a" / "a.mcap").stat().st_mtime_ns == done_a


# -- faults ------------------------------------------------------------------------------------


def test_killed_worker_loses_and_duplicates_nothing(cluster, clip, tmp_path):
    """ray.kill of a model worker while both are busy: its pairs are fused by the other
    (and its replacement), and every output is still gifnet-fuse-bag's."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    names = ("a", "b", "c")
    for name in names:
        build(clip, inputs / name, 50, "--jitter-ms", "2")
    out = tmp_path / "out"
    killed: list[str] = []
    earlier = set(ray.util.list_named_actors())  # workers of other tests, maybe still ending

    def kill_one_worker() -> None:
        """Once the first bag is being written (its hidden folder exists), kill a worker."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(out.glob(".a.*.partial")):
            time.sleep(0.005)
        workers = sorted(
            a for a in ray.util.list_named_actors() if a.startswith(fleet.PROG) and a not in earlier
        )
        if workers:
            ray.kill(ray.get_actor(workers[0]), no_restart=True)
            killed.append(workers[0])

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    code, summary = fuse_bags([inputs], out, *CLASSIC)
    killer.join()

    assert killed, "no worker to kill"
    assert code == 0, summary
    assert summary["workers_lost"] == 1 and summary["pairs_redone"] >= 1
    assert [w["alive"] for w in summary["workers"] if w["name"] == killed[0]] == [False]
    assert summary["pairs_fused"] == 150
    for name in names:
        expected = reference(inputs / name, tmp_path / "ref" / name, *CLASSIC, "--threads", "1")
        assert files(out / name) == files(expected), name
    assert not hidden(out)


def test_unreadable_bags_are_reported_and_the_others_finish(cluster, clip, tmp_path):
    """The command as a user runs it, with a private Ray started inside it (--address local:
    not a cluster someone started on this machine): a random file, a truncated sqlite3 file
    and a missing path among good bags are one line each, and the good bag is still fused."""
    good = build(clip, tmp_path / "good", 3)
    garbage = tmp_path / "noise.mcap"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    cut_source = build(clip, tmp_path / "cut", 3, "--storage", "sqlite3")
    cut = tmp_path / "cut.db3"
    data = (cut_source / "cut.db3").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    missing = tmp_path / "nowhere"
    out = tmp_path / "out"

    inputs = [str(p) for p in (garbage, good, cut, missing)]
    result = run_tool(
        [*inputs, "-o", str(out), "--no-progress", *topics(*CLASSIC), "--address", "local"],
        timeout=300,
    )

    assert result.returncode == 1, result.stderr[-3000:]
    summary = json.loads((out / fleet.SUMMARY).read_text())
    assert summary["status"] == "incomplete"
    entries = {Path(e["input"]).name: e for e in summary["inputs"]}
    assert entries["good"]["status"] == "complete"
    for name in ("noise.mcap", "cut.db3", "nowhere"):
        entry = entries[name]
        assert entry["status"] == "error"
        assert name in entry["error"] and "\n" not in entry["error"], entry
        assert not (out / Path(name).stem).exists()
        assert f"error: {entry['error']}\n" in result.stderr
    assert "no such file" in entries["nowhere"]["error"]
    expected = reference(good, tmp_path / "ref" / "good", *CLASSIC, "--threads", "1")
    assert files(out / "good") == files(expected)
    assert not hidden(out)


def test_ctrl_c_stops_cleanly_and_leaves_no_partial_output(cluster, clip, tmp_path, weights_path):
    """SIGINT to a gifnet-fuse-bags process (joined to the module's Ray with --address) while
    GIFNet fuses 320x256 pairs, about a second each: exit 130, no output, no hidden folder."""
    n = 12
    bag = build(clip, tmp_path / "in", n, "--resize", "320x256")
    out = tmp_path / "out"
    process = subprocess.Popen(
        [
            *tool(),
            str(bag),
            "-o",
            str(out),
            *topics("--weights", str(weights_path), "--device", "cpu"),
            "--address",
            cluster,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    err = signal_when(process, f" 1/{n} ".encode(), signal.SIGINT, timeout=180)
    assert process.returncode == 130, err.decode()[-3000:]
    assert not (out / "in").exists() and not hidden(out)
    summary = json.loads((out / fleet.SUMMARY).read_text())
    assert summary["status"] == "interrupted"
    assert [e["status"] for e in summary["inputs"]] == ["interrupted"]
    report = json.loads((out / "in.report.json").read_text())
    assert report["status"] == "interrupted" and not report["output_written"]
    assert 1 <= report["pairs"]["fused"] < n


def test_an_address_without_a_cluster_is_one_line(clip, tmp_path):
    """--address HOST:PORT where nothing listens: a one-line error at once (Ray alone would
    retry for minutes), exit 1, no output."""
    bag = build(clip, tmp_path / "in", 1)
    address = dead_address()
    out = tmp_path / "out"
    result = run_tool([str(bag), "-o", str(out), *topics(*CLASSIC), "--address", address])
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if ": error: --address" in line]
    assert errors == [
        f"gifnet-fuse-bags: error: --address {address}: no Ray cluster "
        "answers there (Connection refused)"
    ], result.stderr
    assert json.loads((out / fleet.SUMMARY).read_text())["status"] == "error"
    assert not (out / "in").exists()


def test_without_ray_installed_the_tool_says_so_in_one_line(clip, tmp_path):
    """A ROS install without Ray (it is a pip package there): the module still imports and
    the tool exits 1 with one line naming what to install, before touching anything. Ray's
    absence is made by blocking its import in the child (sys.modules entry None)."""
    bag = build(clip, tmp_path / "in", 1)
    out = tmp_path / "out"
    code = (
        "import sys; sys.modules['ray'] = None; from gifnet_ros.tools.fuse_bags import main; "
        f"sys.exit(main({[str(bag), '-o', str(out), *topics(*CLASSIC)]!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "gifnet-fuse-bags: error: Ray is not installed: pip install ray"
    assert not out.exists()
