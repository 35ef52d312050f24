"""The fusion node as a child process, configured as a robot would configure it.

``gifnet-demo`` starts the node this way, and so do the node tests and benchmarks: the node
runs as its own ``python -m gifnet_ros.ros.node`` with a params file, and stops on SIGINT as
under ``ros2 launch``. No rclpy here; the process talks DDS, this module only starts it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml


def dds_environment(domain_id: int | None = None) -> None:
    """Set the DDS variables the node and its peers need in this process (and its children)."""
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    if domain_id is not None:
        os.environ["ROS_DOMAIN_ID"] = str(domain_id)


def start_node(
    namespace: str,
    parameters: dict[str, Any],
    log_path: Path,
    *,
    params_files: Sequence[Path] = (),
    env: dict[str, str] | None = None,
    lifecycle: bool = False,
    script: Path | None = None,
) -> subprocess.Popen:
    """Start ``python -m gifnet_ros.ros.node`` in ``namespace`` with its output in ``log_path``.

    ``lifecycle`` starts the managed node (unconfigured until told over its lifecycle services).
    ``script`` runs that Python file instead of the module, with the same arguments (tests:
    ``test/fault_node.py``, the node with a fault injector).

    ``parameters`` go through a params file written next to the log (a command-line ``-p``
    would re-type values: ``1`` becomes an integer, an empty string nothing at all); files in
    ``params_files`` are applied first, so ``parameters`` override them.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    overrides = log_path.with_suffix(".params.yaml")
    overrides.write_text(yaml.safe_dump({"/**": {"ros__parameters": parameters}}))
    program = [str(script)] if script is not None else ["-m", "gifnet_ros.ros.node"]
    command = [sys.executable, *program, *(["--lifecycle"] if lifecycle else [])]
    command += ["--ros-args", "-r", f"__ns:={namespace}"]
    for path in [*params_files, overrides]:
        command += ["--params-file", str(path)]
    child_env = dict(os.environ if env is None else env)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    child_env.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "0")
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=child_env)


def stop_node(process: subprocess.Popen, timeout: float = 10.0) -> int | None:
    """SIGINT (what Ctrl-C and ros2 launch send), then SIGKILL; returns the SIGINT exit code.

    None means the node did not exit within ``timeout`` of SIGINT and had to be killed.
    """
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None
