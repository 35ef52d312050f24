"""Which Ray cluster gifnet-fuse-bags runs on, and joining or starting it.

Ray's own order (``choose_cluster``): ``--address``, else ``RAY_ADDRESS``, else the cluster
``ray start`` recorded on this machine, else a private Ray started in this process with this
machine's CPUs. A joined cluster is named in one line with its resources; the workers' CPU
and GPU options are the actors', never ray.init's (which Ray refuses for a running cluster).
A record of a cluster that is gone (killed without ``ray stop``) is ignored with one line.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

try:
    import ray
    from ray._common.utils import get_ray_address_file
except ImportError:  # a ROS install without Ray: the tool says how to get it, in one line
    ray = None

from gifnet_ros.offline.bag_io import ToolError

PROG = "gifnet-fuse-bags"
LOCAL_OBJECT_STORE = 256 * 2**20  # bytes; pairs in flight are a few MB, not the bags


def ray_cause(exc: BaseException) -> str:
    """The last line of a Ray error: the worker's own exception, without Ray's traceback (and
    without the class name when it is the package's one-line ToolError)."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    last = lines[-1].strip() if lines else type(exc).__name__
    return last.split(f"{ToolError.__module__}.{ToolError.__name__}: ", 1)[-1]


def _unreachable(address: str) -> str | None:
    """Why nothing answers at a HOST:PORT address (None when something does, or when the
    address is not HOST:PORT: ray:// is Ray's to resolve). ray.init itself would retry for
    minutes, printing warnings."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return None
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _check_reachable(address: str, given: str) -> None:
    """Fail in one line when no cluster answers at ``address``, named as the user gave it."""
    reason = _unreachable(address)
    if reason is not None:
        raise ToolError(f"{given}: no Ray cluster answers there ({reason})")


def choose_cluster(address: str | None) -> tuple[str | None, str]:
    """Ray's own order for finding a cluster, without its failure modes: the address to give
    ray.init (None: start a private Ray in this process) and how it was found, for the lines
    that name it.

    ``--address HOST:PORT`` or ``ray://`` wins; else ``RAY_ADDRESS``; else the cluster that
    ``ray start`` last started or joined on this machine, which Ray records in its temp dir.
    A record left by a cluster that died without ``ray stop`` would make ray.init fail on every
    run (it joins the dead address, or refuses this tool's CPU count for a "running" cluster):
    without --address the tool starts its own Ray instead and says so; the record is Ray's
    and stays. ``local`` always starts a private Ray.
    """
    if address == "local":
        return None, ""
    if address not in (None, "auto"):
        _check_reachable(address, f"--address {address}")
        return address, f"--address {address}"
    from_env = os.environ.get("RAY_ADDRESS")
    if from_env == "local":
        return None, ""
    if from_env:
        _check_reachable(from_env, f"RAY_ADDRESS={from_env}")
        return from_env, f"RAY_ADDRESS={from_env}"
    record = Path(get_ray_address_file(None))  # in Ray's default temp dir, as ray.init
    try:
        recorded = record.read_text().strip()
    except FileNotFoundError:
        recorded = ""
    except OSError as exc:
        raise ToolError(f"cannot read Ray's record {record}: {exc.strerror}") from None
    if not recorded:  # auto: Ray looks for any cluster running here, or says there is none
        return (None, "") if address is None else ("auto", "--address auto")
    reason = _unreachable(recorded)
    if reason is None:
        return "auto", f"recorded by ray start in {record}"
    if address == "auto":
        raise ToolError(
            f"--address auto: the Ray cluster recorded in {record} at {recorded} is gone "
            f"({reason}); start one with ray start, or leave out --address"
        )
    print(
        f"{PROG}: ignored {record}: the Ray cluster it records at {recorded} is gone ({reason}); "
        "starting a private Ray on this machine",
        file=sys.stderr,
    )
    return None, ""


def start_ray(address: str | None) -> bool:
    """Join the cluster ``choose_cluster`` finds, or start Ray here; True when this call
    started or joined it (and so must shut it down)."""
    if ray.is_initialized():
        return False  # an embedding program (or a test) brought its own
    target, found = choose_cluster(address)
    options: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,  # worker errors reach the driver as exceptions
        "logging_level": logging.WARNING,
        "configure_logging": True,
    }
    if target is None:  # "local": neither RAY_ADDRESS nor Ray's record can redirect it
        options.update(
            address="local", num_cpus=os.cpu_count(), object_store_memory=LOCAL_OBJECT_STORE
        )
    else:  # a joined cluster's resources are its own; --workers etc. apply to the actors
        options.update(address=target)
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        what = "start Ray on this machine" if target is None else f"join the Ray cluster ({found})"
        raise ToolError(f"cannot {what}: {ray_cause(exc)}") from None
    if target is not None:
        resources = ray.cluster_resources()
        nodes = sum(node["Alive"] for node in ray.nodes())
        print(
            f"{PROG}: joined the Ray cluster at {ray.get_runtime_context().gcs_address} "
            f"({found}): {nodes} node{'s' * (nodes != 1)}, {resources.get('CPU', 0):g} CPUs, "
            f"{resources.get('GPU', 0):g} GPUs",
            file=sys.stderr,
        )
    return True
