"""Helpers shared by the gifnet-fuse-bags tests: the tool run in this process or as a command,
gifnet-fuse-bag's output as the reference, and what a run left behind."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from ray_head import remove_sessions

from gifnet_ros.offline import fleet
from gifnet_ros.tools import fuse_bag as bag_tool
from gifnet_ros.tools import fuse_bags as fleet_tool

THERMAL, RGB = "/thermal/image", "/rgb/image"
CLASSIC = ("--backend", "classic_laplacian")


def topics(*extra: str) -> list[str]:
    return ["--thermal-topic", THERMAL, "--rgb-topic", RGB, *extra]


def fuse_bags(inputs: list[Path], out_dir: Path, *extra: str) -> tuple[int, dict]:
    """Run the tool in this process (on this process's Ray, if it has one); (exit status,
    summary)."""
    code = fleet_tool.main(
        [*map(str, inputs), "-o", str(out_dir), "--no-progress", *topics(*extra)]
    )
    return code, json.loads((out_dir / fleet.SUMMARY).read_text())


def reference(bag: Path, out: Path, *extra: str) -> Path:
    """gifnet-fuse-bag's output for ``bag`` with the same options, at ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    assert bag_tool.main([str(bag), "-o", str(out), "--no-progress", *topics(*extra)]) == 0
    return out


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def hidden(folder: Path) -> list[Path]:
    """Work folders or files a run left behind anywhere below ``folder``."""
    return [p for p in folder.rglob(".*")]


def tool() -> list[str]:
    """gifnet-fuse-bags as a command: the installed console script when there is one
    (pip/colcon install), else the module."""
    script = Path(sys.executable).with_name("gifnet-fuse-bags")
    return (
        [str(script)] if script.exists() else [sys.executable, "-m", "gifnet_ros.tools.fuse_bags"]
    )


def run_tool(args: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    """gifnet-fuse-bags ``args`` as a command, text output captured; killed if it outlives
    ``timeout`` (the test then fails), and the session folder of a private Ray it started
    removed."""
    process = subprocess.Popen(
        [*tool(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        remove_sessions(process.pid)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def dead_address() -> str:
    """HOST:PORT where nothing listens: a port that was free a moment ago, closed again."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"
