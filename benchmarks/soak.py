"""Soak test of the live node: 30 Hz VGA pairs for minutes; memory, drops and latency per minute.

    .venv/bin/python benchmarks/soak.py                 # 10 minutes, 640x480 at 30 Hz
    .venv/bin/python benchmarks/soak.py --minutes 3

The node runs as a real process (``python -m gifnet_ros.ros.node``) with ``backend:
classic_average`` (the average rule, NOT GIFNet: a few ms per VGA pair), because GIFNet takes
seconds per VGA pair on a CPU and a soak run would then only measure the mailbox dropping 29 of
30 pairs. What is soaked is everything around the network: DDS transport, conversion,
alignment, threads, the synchronizer, diagnostics, memory.

Printed per minute: pairs sent, fused images received here, node RSS (``VmRSS`` from
``/proc/PID/status``), end-to-end latency (RGB stamp -> fused image received) median and p95.
At the end the node's own accounting must close exactly: every RGB image it received was
fused, dropped (replaced in the mailbox, stale), an error, or left unpaired:
``rgb_received == fused + dropped.* + errors.* + unpaired.rgb``. Images lost by best-effort
DDS before reaching the node (sent - received) are shown separately. Exit status 1 when the
accounting does not close.

DDS: Fast DDS' default shared-memory segment (512 KiB) cannot hold a 0.9 MB rgb8 VGA image;
such samples then travel as fragments over the network transports and, best effort at 30 Hz,
about nine in ten RGB images were lost before reaching the node in a trial run. This script
therefore points Fast DDS at ``config/fastdds_large_shm.xml`` (a 32 MiB segment) unless a profile is
set already; ``--default-dds`` measures without it. Robots streaming VGA colour images to a
Python node on one host want the same profile.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gifnet_ros.fusion.pairing import stamp_to_ns  # noqa: E402
from gifnet_ros.ros.client import FusionClient, image_msg  # noqa: E402
from gifnet_ros.ros.node_process import start_node, stop_node  # noqa: E402


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB, from /proc (psutil is not a dependency)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def synthetic_pair(size: tuple[int, int]) -> tuple[Any, Any]:
    """Synthetic VGA frames (content does not matter to the average): thermal mono8, RGB rgb8."""
    import numpy as np

    rng = np.random.default_rng(0)
    width, height = size
    thermal = rng.integers(0, 256, (height, width), np.uint8)
    rgb = rng.integers(0, 256, (height, width, 3), np.uint8)
    return image_msg(thermal, 0, "thermal_camera"), image_msg(rgb, 0, "rgb_camera")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=30.0, help="pairs per second")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument(
        "--default-dds",
        action="store_true",
        help="do not load fastdds_large_shm.xml (see the module docstring)",
    )
    args = parser.parse_args(argv)
    if not args.default_dds:
        profile = str(Path(__file__).resolve().parents[1] / "config" / "fastdds_large_shm.xml")
        # Humble's Fast DDS reads only the old name; newer ones warn that it is deprecated.
        old_name = os.environ.get("ROS_DISTRO") == "humble"
        name = "FASTRTPS_DEFAULT_PROFILES_FILE" if old_name else "FASTDDS_DEFAULT_PROFILES_FILE"
        os.environ.setdefault(name, profile)

    domain = random.SystemRandom().randint(101, 200)
    os.environ.update(
        {
            "ROS_DOMAIN_ID": str(domain),
            "FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA",
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        }
    )
    log = Path(tempfile.mkdtemp(prefix="gifnet-soak-")) / "node.log"
    namespace = f"/gifnet_soak_{os.getpid()}"
    process = start_node(
        namespace,
        {
            "backend": "classic_average",
            "device": "cpu",
            "sync.backend": "builtin",
            "diagnostics_period": 1.0,
            # One synthetic pair sent again and again: not a frozen camera to skip.
            "thermal.freeze_action": "ignore",
        },
        log,
    )
    lock = threading.Lock()
    latencies: list[float] = []
    received = {"count": 0}

    def on_fused(msg: Any, received_ns: int) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        with lock:
            received["count"] += 1
            latencies.append((received_ns - stamp) / 1e9)

    client = FusionClient(namespace, domain_id=domain, on_fused=on_fused)
    # rclpy's SIGINT handler only shuts the client's context down; Ctrl-C must end the run.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    thermal_msg, rgb_msg = synthetic_pair((args.width, args.height))
    sent = 0
    code = 0
    try:
        client.wait_for_node(120, process)
        deadline = time.monotonic() + 60
        while received["count"] == 0:  # warm up: one pair through
            assert time.monotonic() < deadline, f"no fused image; log in {log}"
            send(client, thermal_msg, rgb_msg)
            time.sleep(0.5)
        time.sleep(1.5)  # let the warm-up pairs settle out of the statistics
        with lock:
            latencies.clear()
        start_values = dict(client.diagnostics)
        rss_start = rss_kib(process.pid)
        print(f"node pid {process.pid}, log {log}; backend classic_average (not GIFNet)")
        print(
            f"{args.width}x{args.height} pairs at {args.rate:g} Hz for {args.minutes:g} min; "
            f"RSS at start {rss_start / 1024:.1f} MiB"
        )
        print(
            f"{'minute':>6} {'sent':>6} {'fused':>6} {'RSS MiB':>8} {'lat med ms':>10} "
            f"{'lat p95 ms':>10}"
        )
        period = 1.0 / args.rate
        started = time.monotonic()
        end = started + args.minutes * 60
        next_report = started + 60
        next_send = started
        minute, fused_before, sent_before = 1, received["count"], 0
        warm_up_fused = fused_before
        while True:
            now = time.monotonic()
            if now >= next_report or now >= end:
                with lock:
                    window, latencies[:] = list(latencies), []
                    fused_now = received["count"]
                median = statistics.median(window) * 1e3 if window else float("nan")
                p95 = statistics.quantiles(window, n=20)[-1] * 1e3 if len(window) > 1 else median
                print(
                    f"{minute:>6} {sent - sent_before:>6} {fused_now - fused_before:>6} "
                    f"{rss_kib(process.pid) / 1024:>8.1f} {median:>10.1f} {p95:>10.1f}",
                    flush=True,
                )
                minute, fused_before, sent_before = minute + 1, fused_now, sent
                next_report += 60
                if now >= end:
                    break
            if now >= next_send:
                send(client, thermal_msg, rgb_msg)
                sent += 1
                next_send += period
                if next_send < now - 1.0:  # fell behind by a second: do not burst to catch up
                    next_send = now
            time.sleep(max(0.0, min(next_send, next_report) - time.monotonic()))

        time.sleep(3.0)  # the last pairs through the worker, the next diagnostics out
        client.wait_diagnostics(lambda d: int(d["pairs"]) == outcome_total(d), 30)
        values = dict(client.diagnostics)
        rss_end = rss_kib(process.pid)
        fused_here = received["count"] - warm_up_fused
        code = report(args, sent, values, start_values, fused_here, rss_start, rss_end)
    finally:
        client.close()
        stop_node(process)
    return code


def send(client: FusionClient, thermal_msg: Any, rgb_msg: Any) -> None:
    """Both prepared messages with the current time as stamp (no new pixel buffers)."""
    from builtin_interfaces.msg import Time

    now = time.time_ns()
    stamp = Time(sec=now // 1_000_000_000, nanosec=now % 1_000_000_000)
    thermal_msg.header.stamp = stamp
    rgb_msg.header.stamp = stamp
    client.publish(thermal_msg, rgb_msg)


def outcome_total(values: dict[str, str]) -> int:
    """Pairs with an outcome: fused, dropped for any reason, or an error."""
    return int(values.get("fused", 0)) + sum(
        int(v) for k, v in values.items() if k.startswith(("dropped.", "errors."))
    )


def report(
    args: argparse.Namespace,
    sent: int,
    values: dict[str, str],
    start: dict[str, str],
    fused_here: int,
    rss_start: int,
    rss_end: int,
) -> int:
    def delta(key: str) -> int:
        return int(values.get(key, 0)) - int(start.get(key, 0))

    keys = sorted(k for k in values if k.startswith(("dropped.", "errors.")))
    received = delta("rgb_received")
    parts = {"fused": delta("fused"), **{k: delta(k) for k in keys}}
    parts["unpaired.rgb"] = delta("unpaired.rgb")
    total = sum(parts.values())
    print()
    print(
        f"sent {sent} pairs; the node received {received} RGB and "
        f"{delta('thermal_received')} thermal images (lost by best-effort DDS: "
        f"{sent - received} RGB)"
    )
    print("received = " + " + ".join(f"{k} {v}" for k, v in parts.items()) + f" = {total}")
    print(f"fused images received here: {fused_here}")
    print(
        f"node RSS start {rss_start / 1024:.1f} MiB, end {rss_end / 1024:.1f} MiB "
        f"({(rss_end - rss_start) / 1024:+.1f} MiB)"
    )
    if total != received:
        print("ACCOUNTING DOES NOT CLOSE", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
