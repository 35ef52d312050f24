"""Scaling of gifnet-fuse-bags: pairs/s with 1 and 2 Ray workers, the driver's ceiling, and
an estimate for a cluster of GPU workers; prints tables.

    .venv/bin/python benchmarks/fleet_scaling.py
    .venv/bin/python benchmarks/fleet_scaling.py --gifnet-pairs 8 --classic-pairs 300

Bags are built from the shared M3SVD clip with gifnet-make-bag (mono16 thermal, rgb8, 3 ms
jitter, 5 ms thermal offset, mcap) in a temporary folder.

1. Workers: one local Ray (all CPUs of this machine) runs gifnet-fuse-bags with 1 and then 2
   model workers of one thread each, on GIFNet at 320x256 and on a classical rule (where
   fusion costs almost nothing, so what remains is Ray's transport and the driver). The
   figure is the bag's fusion rate from its report (models already loaded), beside
   gifnet-fuse-bag in one process with one thread, without Ray.
2. Driver ceiling: the driver's own work per pair without any fusion: bag_tool's two read
   passes and its in-order writer with a ready-made fused image, and the same plus a round
   trip of every call's pairs and results through Ray's object store (calls of
   MAX_PAIRS_PER_CALL pairs, what the driver sends when fusion costs nothing). No number of workers
   can make a single driver go faster than this.
3. Cluster estimate: N GPU workers at an assumed per-GPU rate (benchmarks/README.md's GPU
   section expects 60-150 pairs/s at 640x480), capped by the measured driver ceiling, and
   the storage bandwidth the driver then needs.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
from gpu_check import machine_info, machine_lines

from gifnet_ros import bag_tool, fleet, make_bag
from gifnet_ros.bag_tool import BagFusion, PairResult, parser
from gifnet_ros.demo import find_shared
from gifnet_ros.rosbag_io import image_cdr, typestore

ROOT = Path(__file__).resolve().parents[1]
SHARED = find_shared() or ROOT.parent / "shared"  # $GIFNET_SHARED first, as the demo
TOPICS = ["--thermal-topic", "/thermal/image", "--rgb-topic", "/rgb/image"]


def build(folder: Path, name: str, size: str, pairs: int, clip: str) -> Path:
    data = SHARED / "data" / "m3svd"
    bag = folder / name
    assert (
        make_bag.main(
            [
                str(bag),
                "--thermal",
                str(data / "infrared" / f"{clip}.mp4"),
                "--rgb",
                str(data / "visible" / f"{clip}.mp4"),
                "--thermal-encoding",
                "mono16",
                "--jitter-ms",
                "3",
                "--thermal-offset-ms",
                "5",
                "--resize",
                size,
                "--max-frames",
                str(pairs),
            ]
        )
        == 0
    )
    return bag


def fleet_rate(bag: Path, out: Path, workers: int, engine: list[str]) -> dict:
    """gifnet-fuse-bags on one bag with ``workers`` one-thread workers: its bag report."""
    code = fleet.main(
        [str(bag), "-o", str(out), "--workers", str(workers), "--no-progress", *TOPICS, *engine]
    )
    assert code == 0
    return json.loads((out / f"{bag.name}{fleet.REPORT_SUFFIX}").read_text())


def single_rate(bag: Path, out: Path, engine: list[str]) -> dict:
    """gifnet-fuse-bag in this process, one thread: its report."""
    report = out.with_suffix(".json")
    argv = [str(bag), "-o", str(out), "--no-progress", "--report", str(report), *TOPICS]
    assert bag_tool.main([*argv, *engine]) == 0
    return json.loads(report.read_text())


def driver_ceiling(bag: Path, out: Path, transport: bool) -> tuple[float, int, int]:
    """(pairs/s, bytes read, bytes written) of the driver alone: both passes and the writer,
    each pair's result an already serialized fused image of the bag's size; with
    ``transport``, every call's pairs and results also go through Ray's object store."""
    args = parser().parse_args([str(bag), "-o", str(out), *TOPICS, "--no-progress"])
    fusion = BagFusion(args, progress=None)
    started = time.perf_counter()
    fusion.plan()
    fusion.open_output(1)
    message: bytes | None = None
    while not fusion.done:
        batches = []
        while len(batches) < fleet.MAX_PAIRS_PER_CALL and (jobs := fusion.next_batch()):
            batches.append(jobs)
        if not batches:
            continue  # the last next_batch() flushed the rest
        if message is None:
            first = batches[0][0].rgb
            rgb = typestore().deserialize_cdr(first.raw, first.msgtype)
            pixels = np.zeros((rgb.height, rgb.width, 3), np.uint8)
            message = bytes(image_cdr(rgb.header, pixels, "rgb8"))
        if transport:
            batches = ray.get(ray.put(batches))
        results = [[PairResult(message, None)] * len(jobs) for jobs in batches]
        if transport:
            results = ray.get(ray.put(results))
        for jobs, fused in zip(batches, results, strict=True):
            fusion.put(jobs, fused)
    fusion.commit()
    fusion.close()
    seconds = time.perf_counter() - started
    read = 2 * sum(p.stat().st_size for p in bag.iterdir())  # pass 1 and pass 2
    written = sum(p.stat().st_size for p in out.iterdir())
    return fusion.report["pairs"]["fused"] / seconds, read, written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip", default="1230_1202", help="M3SVD clip (default: the longer one)")
    p.add_argument("--gifnet-pairs", type=int, default=6, help="pairs fused with GIFNet")
    p.add_argument("--classic-pairs", type=int, default=200, help="pairs for the classic rule")
    p.add_argument("--driver-pairs", type=int, default=200, help="pairs for the driver ceiling")
    p.add_argument("--weights", type=Path, default=SHARED / "gifnet" / "weights" / "Final.model")
    p.add_argument(
        "--gpu-pairs-per-s",
        type=float,
        nargs=2,
        default=(60.0, 150.0),
        metavar=("LOW", "HIGH"),
        help="assumed pairs/s of one GPU worker at 640x480 (default 60 150)",
    )
    args = p.parse_args()
    import torch

    for line in machine_lines(machine_info(torch.device("cpu"))):
        print(line)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    ray.init(
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=fleet.LOCAL_OBJECT_STORE,
    )
    gifnet = ["--weights", str(args.weights), "--device", "cpu", "--threads", "1"]
    classic = ["--backend", "classic_max", "--threads", "1"]
    rows = []
    ceilings = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for label, size, pairs, engine in (
            ("GIFNet", "320x256", args.gifnet_pairs, gifnet),
            ("classic_max", "320x256", args.classic_pairs, classic),
        ):
            bag = build(folder, f"{label}_{size}", size, pairs, args.clip)
            report = single_rate(bag, folder / f"single_{label}", engine)
            rows.append((label, size, "gifnet-fuse-bag", report))
            for workers in (1, 2):
                report = fleet_rate(bag, folder / f"fleet_{label}_{workers}", workers, engine)
                rows.append((label, size, f"{workers} worker{'s' * (workers > 1)}", report))
        for size in ("320x256", "640x480"):
            bag = build(folder, f"driver_{size}", size, args.driver_pairs, args.clip)
            for transport in (False, True):
                out = folder / f"driver_{size}_{transport}"
                ceilings[size, transport] = driver_ceiling(bag, out, transport)
    ray.shutdown()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    print("\nfusion rate (bag report: pairs over the fusion pass, models loaded)")
    print(f"{'engine':>12} {'size':>8} {'run':>16} {'pairs':>6} {'pairs/s':>8} {'vs 1 worker':>12}")
    one = {}
    for label, size, run, report in rows:
        rate = report["timing"]["pairs_per_s"]
        if run == "1 worker":
            one[label] = rate
        ratio = f"{rate / one[label]:.2f}x" if run == "2 workers" else ""
        print(
            f"{label:>12} {size:>8} {run:>16} {report['pairs']['fused']:>6} "
            f"{rate:>8.2f} {ratio:>12}"
        )

    print(f"\ndriver ceiling ({args.driver_pairs} pairs, copy-topics all, mcap)")
    print(
        f"{'size':>8} {'read+write':>11} {'+ Ray':>8} {'MB read/pair':>13} {'MB written/pair':>16}"
    )
    for size in ("320x256", "640x480"):
        bare, read, written = ceilings[size, False]
        with_ray = ceilings[size, True][0]
        print(
            f"{size:>8} {bare:>11.0f} {with_ray:>8.0f} {read / args.driver_pairs / 1e6:>13.2f} "
            f"{written / args.driver_pairs / 1e6:>16.2f}"
        )

    ceiling, read, written = ceilings["640x480", True]
    per_pair = (read + written) / args.driver_pairs
    low, high = args.gpu_pairs_per_s
    print(f"\nestimate at 640x480: GPU workers at {low:g}-{high:g} pairs/s each, one driver")
    print(f"{'GPUs':>5} {'workers alone':>14} {'with one driver':>16} {'storage MB/s':>13}")
    for n in (1, 2, 4, 8, 16, 32, 64):
        lo, hi = min(n * low, ceiling), min(n * high, ceiling)
        print(
            f"{n:>5} {n * low:>6.0f}-{n * high:<7.0f} {lo:>7.0f}-{hi:<8.0f} "
            f"{lo * per_pair / 1e6:>5.0f}-{hi * per_pair / 1e6:<7.0f}"
        )
    gpus = f"{ceiling / high:.1f}-{ceiling / low:.1f}"
    print(f"one driver saturates at {ceiling:.0f} pairs/s, the work of {gpus} GPUs")


if __name__ == "__main__":
    main()
