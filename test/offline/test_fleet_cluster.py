"""gifnet-fuse-bags beside a Ray cluster started with ``ray start --head``, as a user who
already uses Ray has one: which cluster the tool takes (Ray's own order: --address, then
RAY_ADDRESS, then the cluster ``ray start`` recorded on this machine; ``local`` for a private
one), a record left by a head that was killed, and the faults of a run on that cluster.

One head for the module (2 CPUs, on 127.0.0.1, Ray's default temp dir), started and stopped by
``ray_head``; the last test kills it. Joining is proven by the head itself: the model worker's
PID has log files in the head's session folder. Outputs are compared byte for byte with
gifnet-fuse-bag's, on a classical backend (milliseconds per pair).
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from bag_helpers import build, clip_paths, signal_when
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
from ray_head import RECORD, RayHead, own_sessions_removed, ray_head

from gifnet_ros.offline import fleet

pytestmark = pytest.mark.ray

CPUS = 2  # the head's


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    """The module's head, and one authentication mode for it, this process and the commands
    the tests start. Left unset, Ray picks token auth for a new local Ray (--address local, a
    stale record) and sets RAY_AUTH_MODE=token in this process: later joins of the head,
    started without a token, would fail. ``disabled`` is what ``ray start`` picks on a
    machine without a token."""
    with pytest.MonkeyPatch.context() as env, own_sessions_removed():
        env.setenv("RAY_AUTH_MODE", "disabled")
        with ray_head(CPUS, tmp_path_factory.mktemp("head") / "ray_start.log") as started:
            yield started


@pytest.fixture
def record(head: RayHead) -> Iterator[Callable[[str], None]]:
    """Point Ray's record of the last cluster elsewhere for one test; at the head again after."""
    yield RECORD.write_text
    RECORD.write_text(head.address)


@pytest.fixture(scope="module")
def clip(data_dir: Path) -> tuple[Path, Path]:
    return clip_paths(data_dir)


def joined(head: RayHead, found: str) -> str:
    """The line the tool says on joining the head, found as ``found`` says."""
    return (
        f"{fleet.PROG}: joined the Ray cluster at {head.address} ({found}): 1 node, "
        f"{CPUS} CPUs, 0 GPUs"
    )


def fuse_one(clip: tuple[Path, Path], tmp_path: Path, *extra: str) -> dict:
    """Fuse a 3-pair bag in this process with one model worker and ``extra`` options; check
    that the output is gifnet-fuse-bag's; the summary."""
    bag = build(clip, tmp_path / "in", 3)
    code, summary = fuse_bags([bag], tmp_path / "out", *CLASSIC, "--workers", "1", *extra)
    assert code == 0, summary
    expected = reference(bag, tmp_path / "ref" / "in", *CLASSIC, "--threads", "1")
    assert files(tmp_path / "out" / "in") == files(expected)
    return summary


# -- which cluster -----------------------------------------------------------------------------


def test_without_address_joins_the_cluster_ray_start_recorded(head, clip, tmp_path, capsys):
    """The issue's case: ``ray start --head`` and then the tool as the README shows it. It
    joins (no ray.init with this machine's CPU count, which Ray refuses) and says where."""
    summary = fuse_one(clip, tmp_path)
    err = capsys.readouterr().err.splitlines()
    assert joined(head, f"recorded by ray start in {RECORD}") in err, err
    assert head.ran(summary["workers"][0]["pid"])


def test_address_host_port_joins_that_cluster_whatever_the_record_says(
    head, record, clip, tmp_path, capsys
):
    """--address 127.0.0.1:PORT wins over a record of another (dead) cluster."""
    record(dead_address())
    summary = fuse_one(clip, tmp_path, "--address", f"127.0.0.1:{head.port}")
    assert joined(head, f"--address 127.0.0.1:{head.port}") in capsys.readouterr().err.splitlines()
    assert head.ran(summary["workers"][0]["pid"])


def test_ray_address_wins_over_the_record(head, record, clip, tmp_path, capsys, monkeypatch):
    """RAY_ADDRESS at the head, the record at a dead cluster: Ray's order, so the head."""
    record(dead_address())
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{head.port}")
    summary = fuse_one(clip, tmp_path)
    assert (
        joined(head, f"RAY_ADDRESS=127.0.0.1:{head.port}") in capsys.readouterr().err.splitlines()
    )
    assert head.ran(summary["workers"][0]["pid"])


def test_address_local_starts_a_private_ray_beside_the_cluster(
    head, clip, tmp_path, capsys, monkeypatch
):
    """--address local with the head running, recorded, and named by RAY_ADDRESS: the worker
    runs on a Ray of the tool's own, not on the head."""
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{head.port}")
    summary = fuse_one(clip, tmp_path, "--address", "local")
    assert "joined" not in capsys.readouterr().err
    assert not head.ran(summary["workers"][0]["pid"])


def test_more_workers_than_the_cluster_has_cpus_is_one_line(head, clip, tmp_path):
    """--workers 3 on the 2-CPU head, as a command: one line naming both counts, exit 1, no
    output and no model worker left on the head."""
    bag = build(clip, tmp_path / "in", 1)
    out = tmp_path / "out"
    result = run_tool([str(bag), "-o", str(out), *topics(*CLASSIC), "--workers", str(CPUS + 1)])
    assert result.returncode == 1, result.stderr[-3000:]
    assert (
        f"{fleet.PROG}: error: {CPUS + 1} workers need {CPUS + 1} CPUs; the cluster has "
        f"{CPUS} CPUs and 0 GPUs (fewer --workers, or --gpus-per-worker)"
    ) in result.stderr.splitlines(), result.stderr
    assert json.loads((out / fleet.SUMMARY).read_text())["status"] == "error"
    assert not (out / "in").exists()
    assert not head.workers("BagFusionActor")


# -- faults on the cluster ---------------------------------------------------------------------


def test_sigkill_of_a_model_worker_process(head, clip, tmp_path, capsys):
    """SIGKILL of one model worker's process on the head (both busy with three 50-pair bags):
    a replacement starts, the lost calls are fused again and counted, and every pair is in
    its output once, where gifnet-fuse-bag puts it."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    names = ("a", "b", "c")
    for name in names:
        build(clip, inputs / name, 50, "--jitter-ms", "2")
    out = tmp_path / "out"
    earlier = {p.pid for p in head.workers("BagFusionActor")}  # of other tests, maybe ending
    killed: list[int] = []

    def kill_one_worker() -> None:
        """Once the first bag is being written (its hidden folder exists), kill a worker."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(out.glob(".a.*.partial")):
            time.sleep(0.005)
        workers = [p for p in head.workers("BagFusionActor") if p.pid not in earlier]
        if workers:
            workers[0].send_signal(signal.SIGKILL)
            killed.append(workers[0].pid)

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    code, summary = fuse_bags([inputs], out, *CLASSIC)
    killer.join()

    assert killed, "no worker to kill"
    assert code == 0, summary
    workers = summary["workers"]
    assert [w.get("pid") for w in workers if not w["alive"]] == killed
    assert len(workers) == CPUS + 1  # the replacement
    assert summary["workers_lost"] == 1 and summary["pairs_redone"] >= 1
    assert sum(w["pairs"] for w in workers) == summary["pairs_fused"] == 150
    printed = capsys.readouterr().out  # the summary: on stdout when the run succeeds
    assert f"{summary['pairs_redone']} of their pairs were fused again by others" in printed
    for name in names:
        expected = reference(inputs / name, tmp_path / "ref" / name, *CLASSIC, "--threads", "1")
        assert files(out / name) == files(expected), name
    assert not hidden(out)


def test_sigkill_of_the_driver_then_the_same_command(head, clip, tmp_path):
    """SIGKILL of the command (joined to the head without --address) once its first bag is
    complete, then the same command: that bag is skipped, the killed run's hidden folder is
    removed, the others are fused as gifnet-fuse-bag fuses them."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    build(clip, inputs / "a", 3)
    build(clip, inputs / "b", 150)
    build(clip, inputs / "c", 3)
    out = tmp_path / "out"
    command = [str(inputs), "-o", str(out), *topics(*CLASSIC)]
    driver = subprocess.Popen([*tool(), *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    signal_when(driver, b"bags 1/3", signal.SIGKILL, timeout=180)
    assert json.loads((out / "a.report.json").read_text())["status"] == "complete"
    assert list(out.glob(".b.*.partial")), "b was not in progress when the command was killed"
    done_a = (out / "a" / "a.mcap").stat().st_mtime_ns

    again = run_tool(command)

    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((out / fleet.SUMMARY).read_text())
    status = {Path(e["input"]).name: e["status"] for e in summary["inputs"]}
    assert status == {"a": "skipped", "b": "complete", "c": "complete"}
    assert (out / "a" / "a.mcap").stat().st_mtime_ns == done_a
    assert [line for line in summary["leftovers"] if str(driver.pid) in line], summary
    assert not hidden(out)
    for name in ("b", "c"):
        expected = reference(inputs / name, tmp_path / "ref" / name, *CLASSIC, "--threads", "1")
        assert files(out / name) == files(expected), name


# -- a head that is gone (kills the module's head: keep it last) -------------------------------


def test_a_record_left_by_a_killed_head_is_ignored(head, clip, tmp_path, capsys):
    """The head SIGKILLed (no ray stop): Ray's record still names it. Without --address the
    tool says so in one line and fuses on a private Ray; the record is Ray's and stays;
    --address auto, which asks for that cluster, is a one-line error."""
    head.kill()
    assert RECORD.read_text().strip() == head.address

    code, _ = fuse_bags([build(clip, tmp_path / "in1", 1)], tmp_path / "out1", "--address", "auto")
    assert code == 1
    assert (
        f"{fleet.PROG}: error: --address auto: the Ray cluster recorded in {RECORD} at "
        f"{head.address} is gone (Connection refused); start one with ray start, or leave "
        "out --address"
    ) in capsys.readouterr().err.splitlines()

    fuse_one(clip, tmp_path)
    err = capsys.readouterr().err.splitlines()
    assert (
        f"{fleet.PROG}: ignored {RECORD}: the Ray cluster it records at {head.address} is gone "
        "(Connection refused); starting a private Ray on this machine"
    ) in err, err
    assert RECORD.read_text().strip() == head.address
