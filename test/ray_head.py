"""A real Ray head for tests, as a user starts one: ``ray start --head`` on 127.0.0.1 with
Ray's default temp dir, where ray.init (and gifnet-fuse-bags) look for the cluster that
``ray start`` recorded.

``ray stop`` would stop every Ray on the machine, other people's included, so the head runs
with ``--block`` in a subprocess of its own and is stopped by the PIDs of that process and its
descendants (the GCS, the raylet, the agents and every worker the raylet forked). Ray's record
of the last cluster is put back as it was before, and the head's session folder is removed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

# isort: off
# Ray first: importing it puts the psutil that Ray ships with on sys.path (nothing in
# requirements.txt installs psutil itself).
from ray._common.utils import get_ray_address_file
import psutil

# isort: on

RAY = Path(sys.executable).with_name("ray")
RECORD = Path(get_ray_address_file(None))  # /tmp/ray/ray_current_cluster
TEMP = RECORD.parent  # Ray's default temp dir, /tmp/ray
STARTED = "Ray runtime started"


@dataclass
class RayHead:
    """A running head: its ``ray start --block`` process, the address Ray recorded for it
    (Ray writes this machine's IP, not 127.0.0.1) and its session folder."""

    process: subprocess.Popen
    address: str
    session: Path

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    def processes(self) -> list[psutil.Process]:
        """``ray start`` and everything it started, workers included; [] once it is gone."""
        return _tree(self.process)

    def workers(self, actor: str) -> list[psutil.Process]:
        """The head's processes that run an actor of class ``actor`` (Ray titles them
        ``ray::CLASS`` or ``ray::CLASS.method``)."""
        found = []
        for process in self.processes():
            try:
                title = process.cmdline()
            except psutil.Error:  # ended meanwhile
                continue
            if title and title[0].split(".")[0] == f"ray::{actor}":
                found.append(process)
        return found

    def ran(self, pid: int) -> bool:
        """Whether the head's raylet ever started a worker with this PID: Ray names each
        worker's log files in the session folder after its PID."""
        return any((self.session / "logs").glob(f"worker-*-{pid}.out"))

    def kill(self) -> None:
        """SIGKILL every process of the head at once, as a crash or an OOM kill would: no
        ``ray stop``, so Ray's record of the cluster stays behind."""
        _kill(self.processes())
        self.process.wait(timeout=30)


def _tree(process: subprocess.Popen) -> list[psutil.Process]:
    try:
        root = psutil.Process(process.pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to ``ray start --block`` (it stops the processes it started), then SIGKILL
    whatever is left of them, workers included."""
    left = _tree(process)
    if process.poll() is None:
        process.terminate()
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
    _kill(left)
    if process.poll() is None:
        process.kill()
        process.wait(timeout=30)


def _kill(processes: list[psutil.Process]) -> None:
    for process in processes:
        with suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)
    psutil.wait_procs(processes, timeout=30)


@contextmanager
def ray_head(num_cpus: int, log: Path, timeout: float = 120) -> Iterator[RayHead]:
    """A head with ``num_cpus`` CPUs and no GPU, its output in ``log``; stopped afterwards,
    Ray's record restored as it was and the head's session folder removed."""
    before = RECORD.read_bytes() if RECORD.exists() else None
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(RAY),
                "start",
                "--head",
                "--block",
                "--node-ip-address=127.0.0.1",
                "--port=0",  # a free port: never another cluster's 6379
                f"--num-cpus={num_cpus}",
                "--num-gpus=0",
                "--include-dashboard=false",
                "--disable-usage-stats",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of pytest is not sent to the head
        )
    head: RayHead | None = None
    try:
        deadline = time.monotonic() + timeout
        while STARTED not in log.read_text(errors="replace"):
            assert process.poll() is None, f"ray start failed: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no head in {timeout} s: {log.read_text()}"
            time.sleep(0.2)
        head = RayHead(process, RECORD.read_text().strip(), _session(process))
        yield head
    finally:
        _stop(process)
        if before is not None:
            RECORD.write_bytes(before)
        elif head is not None and RECORD.exists() and RECORD.read_text().strip() == head.address:
            RECORD.unlink()
        if head is not None:
            _remove_session(head.session)


@contextmanager
def own_sessions_removed() -> Iterator[None]:
    """Afterwards, remove the session folders of the Rays started in this process meanwhile
    (ray.init, or the tool run in-process starting a private Ray): Ray names them after the
    process that started them, so no other process's folder is touched."""
    before = _sessions(os.getpid())
    try:
        yield
    finally:
        for session in _sessions(os.getpid()) - before:
            _remove_session(session)


def remove_sessions(pid: int) -> None:
    """Remove the session folders of the Rays that process ``pid`` (a command a test ran,
    now ended) started."""
    for session in _sessions(pid):
        _remove_session(session)


def _sessions(pid: int) -> set[Path]:
    return set(TEMP.glob(f"session_*_{pid}"))


def _remove_session(session: Path) -> None:
    """A session folder, and Ray's link to the latest session where it names this one."""
    shutil.rmtree(session, ignore_errors=True)
    latest = TEMP / "session_latest"
    if latest.is_symlink() and latest.readlink() == session:
        latest.unlink()


def _session(process: subprocess.Popen) -> Path:
    """The head's session folder, from its GCS server's ``--log_dir``."""
    for child in psutil.Process(process.pid).children(recursive=True):
        for arg in child.cmdline():
            if arg.startswith("--log_dir="):
                return Path(arg.partition("=")[2]).parent
    raise AssertionError("the head has no GCS server with --log_dir")
