"""Several camera heads on one model against the same heads as separate nodes; prints a table.

    .venv/bin/python benchmarks/heads.py                  # 320x256 and 640x480; 1, 2, 4 heads
    .venv/bin/python benchmarks/heads.py --sizes 320x256 --heads 1 2 --seconds 10   # quick

The issue's requirement 5 ("several camera heads, one model"): peak RSS with 1, 2 and 4 heads
(target: each extra head adds at most 15 % of the one-head figure) and fused pairs per second
per head at a fixed input rate, beside the same heads as separate nodes. For each size and
head count N this starts real node processes (``python -m gifnet_ros.ros.node``, default backend
and precision, device cpu) in two arrangements:

- ``one node``: one process with ``heads: [h0 .. hN-1]``, one model; pairs of one size from
  several heads go through the network in one batch;
- ``separate``: N processes with one head each, in their own namespaces, at the same time
  (what a robot would run without heads: N models, N DDS participants, N thread pools of
  the backend on the same cores).

N = 1 is one node with one head in both arrangements and runs once; it is the reference of
the per-head percentages. Every head gets its own frames of the two shared M3SVD clips
(resized to the size; no thermal frame twice in a row to one head, since the node skips a
repeated thermal frame as a frozen camera by default), all heads at the same ticks of a fixed
rate, stamped now, as cameras triggered together. After ``--warmup`` seconds of that stream,
which are not counted (the first batch of N pairs allocates), the next ``--seconds`` are the
window. Per case:

- ready / warm / peak MB: the node's RSS once it is discovered (model, DDS, heads; no pair
  yet), its high-water mark (VmHWM) after one pair per head fused alone (batch of 1), and
  the high-water mark at the end (after batches of N); summed over the separate nodes. ready
  and warm split what grows per head: the heads' DDS entities and buffers, and the
  activations of one pair, from what a batch of N adds on top;
- +%/head: (peak - one-head peak) / (N - 1) as % of the one-head peak (the target: <= 15);
- fused/s: fused images received here per head for pairs stamped in the window, over the
  window (median over the heads, then the lowest head);
- drop %: pairs stamped in the window whose fused image never came (the node drops a pair
  that a newer one of the same head replaced while the model was busy; DDS may lose some);
- latency: RGB stamp -> fused image received here, median over the window's pairs of each
  head, median over the heads.

The machine's load changes what the forward passes cost (two cores shared with other runs):
the header prints the CPU and the load average at the start and the end.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model_speed import cpu_summary  # also imports torch, whose version the header prints

from gifnet_ros.offline.sources import PixelPair, find_shared, m3svd_pairs
from gifnet_ros.ros.client import ClientError, FusionClient
from gifnet_ros.ros.node_process import dds_environment, start_node, stop_node

# The node process, its client and the frames, as the demo runs them.
from gifnet_ros.tools.arg_types import fusion_width_height

ROOT = Path(__file__).resolve().parents[1]
SHARED = find_shared() or ROOT.parent / "shared"  # $GIFNET_SHARED first, as the demo
LARGE_SHM = ROOT / "config" / "fastdds_large_shm.xml"
CLIPS = ("1230_1202", "0111_1716")
"""Both shared M3SVD clips (205 and 151 frames): enough distinct frames for 4 heads."""
RATES = {(320, 256): 0.4, (640, 480): 0.1}
"""Default pairs/s per head. The default engine on this project's 2-core AVX2 machine (ONNX
Runtime fp32: no native bf16) took 1.5 s per 320x256 pair and 5.2 s per 640x480 pair while
other jobs ran: one head keeps up at these rates (60 % / 52 % of the machine) and 2 and 4
heads do not, so the rows compare how the two arrangements share a saturated CPU. Other
sizes: scaled by pixels from 320x256."""
MIN_WINDOW_PAIRS = 4
"""The window is long enough for this many pairs per head at least (40 s at 0.1 Hz)."""
STARTUP_TIMEOUT = 240.0
"""Seconds for N nodes starting at once on two cores (imports, model load) to be discovered."""
FUSE_TIMEOUT = 180.0
WARM_UP_RETRY = 20.0
"""Seconds before the warm-up sends the next frame (a pair right after discovery can be lost)."""
DRAIN_TIMEOUT = 120.0
"""Seconds for the pairs in flight after the stream: a batch of 4 VGA pairs takes ~20 s."""


def status_mb(pid: int, field_name: str) -> float:
    """A memory field of /proc/PID/status in MB (VmRSS now, VmHWM its high-water mark)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field_name} for pid {pid}")


def load_frames(size: tuple[int, int], count: int) -> list[PixelPair]:
    """Up to ``count`` distinct pairs (by thermal bytes) of the shared clips at ``size``."""
    frames: list[PixelPair] = []
    seen: set[bytes] = set()
    for clip in CLIPS:
        for thermal, rgb in m3svd_pairs(clip, count, size, every=1, shared=SHARED):
            key = thermal.tobytes()
            if key not in seen and len(frames) < count:
                seen.add(key)
                frames.append((thermal, rgb))
    return frames


@dataclass
class Feed:
    """One head as this process sees it: its client, its frames, what was sent and received."""

    name: str
    client: FusionClient
    frames: list[PixelPair]
    sent: list[int] = field(default_factory=list)  # stamps of the window's pairs
    received: dict[int, int] = field(default_factory=dict)  # of those: stamp -> receipt, ns
    next_frame: int = 0

    def send(self, counted: bool) -> int:
        """The head's next frame, stamped now (returned); frames cycle only after all of a
        head's, so the node never sees one thermal image twice in a row."""
        pair = self.frames[self.next_frame % len(self.frames)]
        self.next_frame += 1
        stamp = self.client.publish_pair(pair)
        if counted:
            self.sent.append(stamp)
        return stamp

    def warm_up(self) -> None:
        """Get one pair of this head fused. FusionClient.warm_up re-sends the same pair when the
        node's diagnostics are late, which the node then skips as a frozen thermal camera;
        here every try is the next frame (a newer pair replaces an unfused one in the node)."""
        stamps: list[int] = []
        deadline = time.monotonic() + FUSE_TIMEOUT
        while time.monotonic() < deadline:
            stamps.append(self.send(False))
            if self.client.wait_until(
                lambda: any(s in self.client.fused for s in stamps), WARM_UP_RETRY
            ):
                return
        raise ClientError(f"head {self.name}: no fused image within {FUSE_TIMEOUT:.0f} s")

    def collect(self) -> None:
        """The window's fused images that came (the client keeps them by stamp)."""
        for stamp in self.sent:
            got = self.client.wait_fused(stamp, 0.0)  # under the client's lock
            if got is not None:
                self.received[stamp] = got[1]

    def settled(self) -> bool:
        """The node has fused, dropped or failed every pair of this head it paired."""
        values = self.client.diagnostics
        done = sum(
            int(v)
            for k, v in values.items()
            if k == "fused" or k.startswith(("dropped.", "errors."))
        )
        return bool(values) and done >= int(values.get("pairs", 0))


@dataclass
class Case:
    """One (size, N, arrangement) run's figures."""

    size: str
    heads: int
    arrangement: str
    rate: float
    ready_mb: list[float]
    warm_mb: list[float]
    peak_mb: list[float]
    fused_per_s: list[float]
    drop_pct: float
    latency_s: float
    precision: str


def start_nodes(
    namespaces: list[str], head_lists: list[list[str]], weights: Path, log_dir: Path
) -> list[Any]:
    """The node processes, one per namespace, each with its list of heads."""
    processes = []
    for k, (namespace, heads) in enumerate(zip(namespaces, head_lists, strict=True)):
        parameters = {
            "weights": str(weights),
            "device": "cpu",
            "diagnostics_period": 0.25,
            "heads": heads,
        }
        processes.append(start_node(namespace, parameters, log_dir / f"node{k}.log"))
    return processes


def stop_all(processes: list[Any], log_dir: Path) -> None:
    """SIGINT to every node at once (each exit takes seconds); a failed exit shows its log."""
    with ThreadPoolExecutor(max(1, len(processes))) as pool:
        codes = list(pool.map(stop_node, processes))
    for k, code in enumerate(codes):
        if code != 0:
            log = (log_dir / f"node{k}.log").read_text(errors="replace")[-1500:]
            print(f"node {k} exited with {code}:\n{log}", file=sys.stderr)


def run_case(
    size: tuple[int, int],
    heads: int,
    separate: bool,
    rate: float,
    frames: list[PixelPair],
    args: argparse.Namespace,
    domain: int,
) -> Case:
    """Start the node(s), feed every head at ``rate`` and measure (see the module docstring)."""
    width, height = size
    tag = f"/gifnet_heads_{os.getpid()}_{width}x{height}_{heads}{'s' if separate else 'o'}"
    names = [f"h{k}" for k in range(heads)]
    if separate:
        namespaces = [f"{tag}_{name}" for name in names]
        head_lists, client_heads = [[""]] * heads, [("", ns) for ns in namespaces]
    else:
        namespaces, head_lists = [tag], [names]
        client_heads = [(name, tag) for name in names]
    with tempfile.TemporaryDirectory(prefix="gifnet-heads-") as tmp:
        log_dir = Path(tmp)
        processes = start_nodes(namespaces, head_lists, args.weights, log_dir)
        feeds: list[Feed] = []
        try:
            for k, (head, namespace) in enumerate(client_heads):
                client = FusionClient(namespace, head=head, domain_id=domain)
                feeds.append(Feed(names[k], client, frames[k::heads]))
            # rclpy.init installs its own handlers, which only shut the contexts down.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            pids = [p.pid for p in processes]
            node_of = [k if separate else 0 for k in range(heads)]
            for k, feed in enumerate(feeds):
                feed.client.wait_for_node(STARTUP_TIMEOUT, processes[node_of[k]])
            ready = [status_mb(pid, "VmRSS") for pid in pids]
            for feed in feeds:  # one pair per head, alone: allocates one pair's activations
                feed.warm_up()
            warm = [status_mb(pid, "VmHWM") for pid in pids]
            warm_ticks = max(1, round(args.warmup * rate))  # one batch of N at least
            ticks = warm_ticks + max(round(args.seconds * rate), MIN_WINDOW_PAIRS)
            start = time.monotonic()
            for tick in range(ticks):
                time.sleep(max(0.0, start + tick / rate - time.monotonic()))
                for feed in feeds:
                    feed.send(tick >= warm_ticks)
            window_end = start + ticks / rate
            time.sleep(max(0.0, window_end - time.monotonic()))
            deadline = time.monotonic() + DRAIN_TIMEOUT
            while time.monotonic() < deadline and not all(f.settled() for f in feeds):
                time.sleep(0.1)
            time.sleep(0.5)  # the last fused images on their way here
            for feed in feeds:
                feed.collect()
            peak = [status_mb(pid, "VmHWM") for pid in pids]
            precision = feeds[0].client.diagnostics.get("precision", "?")
        except BaseException:
            for log in sorted(log_dir.glob("node*.log")):
                print(f"{log.name}:\n{log.read_text(errors='replace')[-1500:]}", file=sys.stderr)
            raise
        finally:
            for feed in feeds:
                feed.client.close()
            stop_all(processes, log_dir)
    window = (ticks - warm_ticks) / rate  # pairs stamped in it count, whenever they came back
    sent = sum(len(f.sent) for f in feeds)
    got = [[s for s in f.sent if s in f.received] for f in feeds]
    latencies = [
        statistics.median((f.received[s] - s) / 1e9 for s in g) if g else math.nan
        for f, g in zip(feeds, got, strict=True)
    ]
    return Case(
        size=f"{width}x{height}",
        heads=heads,
        arrangement="separate" if separate else "one node",
        rate=rate,
        ready_mb=ready,
        warm_mb=warm,
        peak_mb=peak,
        fused_per_s=[len(g) / window for g in got],
        drop_pct=100.0 * (sent - sum(len(g) for g in got)) / max(sent, 1),
        latency_s=statistics.median(latencies),
        precision=precision,
    )


HEADER = (
    f"{'size':>8} {'N':>2} {'arrangement':>11} {'Hz/head':>7} {'ready MB':>8} {'warm MB':>8} "
    f"{'peak MB':>8} {'+%/head':>7} {'fused/s/head':>12} {'min head':>8} {'drop %':>6} "
    f"{'latency s':>9}"
)


def row(case: Case, one_head_peak: float | None) -> str:
    """One table line; +%/head needs the size's one-head peak (none for N = 1)."""
    peak = sum(case.peak_mb)
    extra = (
        f"{100.0 * (peak - one_head_peak) / (case.heads - 1) / one_head_peak:7.1f}"
        if one_head_peak and case.heads > 1
        else f"{'-':>7}"
    )
    arrangement = "(both)" if case.heads == 1 else case.arrangement
    return (
        f"{case.size:>8} {case.heads:>2} {arrangement:>11} {case.rate:7.2f} "
        f"{sum(case.ready_mb):8.0f} {sum(case.warm_mb):8.0f} {peak:8.0f} {extra} "
        f"{statistics.median(case.fused_per_s):12.2f} {min(case.fused_per_s):8.2f} "
        f"{case.drop_pct:6.1f} {case.latency_s:9.2f}"
    )


def default_rate(size: tuple[int, int]) -> float:
    """RATES where measured, else scaled by pixels from 320x256 (see RATES)."""
    if size in RATES:
        return RATES[size]
    return RATES[(320, 256)] * 320 * 256 / (size[0] * size[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", nargs="+", type=fusion_width_height, default=[(320, 256), (640, 480)]
    )
    parser.add_argument("--heads", nargs="+", type=int, default=[1, 2, 4], help="head counts")
    parser.add_argument(
        "--seconds",
        type=float,
        default=25.0,
        help=f"measured window (25; longer where the rate gives under {MIN_WINDOW_PAIRS} pairs)",
    )
    parser.add_argument("--warmup", type=float, default=5.0, help="stream before it (5)")
    parser.add_argument(
        "--rate",
        type=float,
        help="pairs/s per head at every size (default: 0.4 at 320x256, 0.1 at 640x480; RATES)",
    )
    parser.add_argument(
        "--weights", type=Path, default=SHARED / "gifnet" / "weights" / "Final.model"
    )
    args = parser.parse_args()
    if 1 not in args.heads:
        parser.error("--heads needs 1: the one-head figure is the reference")

    domain = random.SystemRandom().randint(101, 200)
    dds_environment(domain)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    # Fast DDS' 512 KiB shared-memory segment cannot hold a 0.9 MB rgb8 VGA image, and with
    # discovery on this host only no other transport carried one (a first run: no RGB image
    # reached the node at 640x480): the 32 MiB segment, as benchmarks/soak.py.
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(LARGE_SHM))
    # A SIGTERM (a CI job cancelled) unwinds like Ctrl-C, through every finally: no node stays.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    import torch

    from gifnet_ros.fusion.precision import probe

    flags = probe(torch.device("cpu")).cpu_flags
    absent = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f not in flags]
    print(
        f"CPU: {cpu_summary()}; without {' '.join(absent) or '-'}; torch {torch.__version__}; "
        f"{os.cpu_count()} CPUs"
    )
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(
        f"window >= {args.seconds:g} s after >= {args.warmup:g} s of stream (see each size's "
        f"line); device cpu, backend and precision auto; ROS_DOMAIN_ID {domain}; Fast DDS "
        f"profile {os.environ['FASTDDS_DEFAULT_PROFILES_FILE']}",
        flush=True,
    )
    lines = []
    try:
        for size in args.sizes:
            rate = args.rate or default_rate(size)
            per_head = math.ceil(rate * (args.warmup + args.seconds)) + MIN_WINDOW_PAIRS + 2
            frames = load_frames(size, per_head * max(args.heads))
            one_head_peak, precision = None, None
            for heads in sorted(set(args.heads)):
                for separate in (False, True) if heads > 1 else (False,):
                    case = run_case(size, heads, separate, rate, frames, args, domain)
                    if heads == 1:
                        one_head_peak = sum(case.peak_mb)
                    if case.precision != precision:
                        precision = case.precision
                        window = max(round(args.seconds * rate), MIN_WINDOW_PAIRS) / rate
                        lines.append(
                            f"{case.size}: {rate:g} pairs/s per head, window {window:g} s; "
                            f"{precision}"
                        )
                        print(lines[-1])
                    lines.append(row(case, one_head_peak))
                    print(lines[-1], flush=True)
                    if separate:
                        per_node = ", ".join(f"{v:.0f}" for v in case.peak_mb)
                        lines.append(f"{'':>13} separate, peak MB per node: {per_node}")
                        print(lines[-1], flush=True)
    except KeyboardInterrupt:
        print("interrupted; every node was stopped", file=sys.stderr)
        return 130
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(HEADER)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
