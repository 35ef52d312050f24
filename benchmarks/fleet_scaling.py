"""Scaling of gifnet-fuse-bags: pairs/s with 1 and 2 Ray workers, the driver's ceiling, and
an estimate for a cluster of GPU workers; prints tables.

    .venv/bin/python benchmarks/fleet_scaling.py
    .venv/bin/python benchmarks/fleet_scaling.py --rounds 1 --gifnet-pairs 2 --classic-pairs 20

Bags are built from the shared M3SVD clip with gifnet-make-bag (mono16 thermal, rgb8, 3 ms
jitter, 5 ms thermal offset, mcap) in a temporary folder.

1. Workers: one local Ray (all CPUs of this machine) runs gifnet-fuse-bags with 1 and then 2
   model workers of one thread each, on GIFNet at 320x256 and on a classical rule (where
   fusion costs almost nothing, so what remains is Ray's transport and the driver). The
   figure is the bag's fusion rate from its report (models already loaded), beside
   gifnet-fuse-bag in one process with one thread, without Ray.
2. Driver ceiling: the driver's own work per pair without any fusion: bag fusion's two read
   passes and its in-order writer with a ready-made fused image, and the same plus the
   driver's side of Ray (putting each call's pairs into the object store, getting a call's
   results out of it; calls of MAX_PAIRS_PER_CALL pairs, what the driver sends when fusion
   costs nothing). No number of workers can make a single driver go faster than this.
3. Cluster estimate: N GPU workers at an assumed per-GPU rate (benchmarks/README.md's GPU
   section expects 60-150 pairs/s at 640x480), capped by the measured driver ceiling, and
   the storage bandwidth the driver then needs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
from gpu_check import machine_info, machine_lines

from gifnet_ros.offline import fleet
from gifnet_ros.offline.bag_fusion import BagFusion
from gifnet_ros.offline.bag_io import image_cdr, typestore
from gifnet_ros.offline.bag_pair_fuser import PairResult
from gifnet_ros.offline.bag_settings import BagSettings
from gifnet_ros.offline.fleet_bags import REPORT_SUFFIX
from gifnet_ros.offline.fleet_cluster import LOCAL_OBJECT_STORE
from gifnet_ros.offline.sources import find_shared
from gifnet_ros.tools import fuse_bag as bag_tool
from gifnet_ros.tools import fuse_bags, make_bag

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
    code = fuse_bags.main(
        [str(bag), "-o", str(out), "--workers", str(workers), "--no-progress", *TOPICS, *engine]
    )
    assert code == 0
    return json.loads((out / f"{bag.name}{REPORT_SUFFIX}").read_text())


def single_rate(bag: Path, out: Path, engine: list[str]) -> dict:
    """gifnet-fuse-bag in this process, one thread: its report."""
    report = out.with_suffix(".json")
    argv = [str(bag), "-o", str(out), "--no-progress", "--report", str(report), *TOPICS]
    assert bag_tool.main([*argv, *engine]) == 0
    return json.loads(report.read_text())


def driver_ceiling(bag: Path, out: Path, transport: bool) -> tuple[float, int, int]:
    """(pairs/s, bytes read, bytes written) of the driver alone: both passes and the writer,
    each pair's result an already serialized fused image of the bag's size; with
    ``transport``, also the driver's side of Ray: putting each call's pairs into the object
    store and getting a call's results out of it (the workers' side is theirs)."""
    fusion = BagFusion(bag, out, BagSettings(thermal_topic=TOPICS[1], rgb_topic=TOPICS[3]))
    started = time.perf_counter()
    fusion.plan()
    fusion.open_output(1)
    message: bytes | None = None
    answer = None  # a full call's results, in the object store as a worker leaves them
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
            if answer is None:
                answer = ray.put([[PairResult(message, None)]] * fleet.MAX_PAIRS_PER_CALL)
            ray.put(batches)
            results = ray.get(answer)[: len(batches)]
        else:
            results = [[PairResult(message, None)] for _ in batches]
        for jobs, fused in zip(batches, results, strict=True):
            fusion.put(jobs, fused)
    fusion.commit()
    fusion.close()
    seconds = time.perf_counter() - started
    read = 2 * sum(p.stat().st_size for p in bag.iterdir())  # pass 1 and pass 2
    written = sum(p.stat().st_size for p in out.iterdir())
    return fusion.report.pairs.fused / seconds, read, written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip", default="1230_1202", help="M3SVD clip (default: the longer one)")
    p.add_argument("--gifnet-pairs", type=int, default=8, help="pairs fused with GIFNet")
    p.add_argument("--classic-pairs", type=int, default=200, help="pairs for the classic rule")
    p.add_argument("--driver-pairs", type=int, default=200, help="pairs for the driver ceiling")
    p.add_argument("--rounds", type=int, default=3, help="rounds; medians are printed")
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
        object_store_memory=LOCAL_OBJECT_STORE,
    )
    gifnet = ["--weights", str(args.weights), "--device", "cpu", "--threads", "1"]
    classic = ["--backend", "classic_max", "--threads", "1"]
    runs = ("gifnet-fuse-bag", "1 worker", "2 workers")
    rates: dict[tuple[str, str], list[float]] = {}
    ceilings: dict[tuple[str, bool], list[float]] = {}
    megabytes: dict[str, tuple[float, float]] = {}  # read, written per pair
    sizes = ("320x256", "640x480")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        engines = [
            ("GIFNet", build(folder, "gifnet", "320x256", args.gifnet_pairs, args.clip), gifnet),
            (
                "classic_max",
                build(folder, "classic", "320x256", args.classic_pairs, args.clip),
                classic,
            ),
        ]
        drivers = {
            size: build(folder, f"driver_{size}", size, args.driver_pairs, args.clip)
            for size in sizes
        }
        # Every configuration once per round, so that the machine's load hits all alike.
        for round_ in range(args.rounds):
            for label, bag, engine in engines:
                out = folder / f"{round_}_{label}"
                out.mkdir()
                report = single_rate(bag, out / "single", engine)
                rates.setdefault((label, runs[0]), []).append(report["timing"]["pairs_per_s"])
                for workers in (1, 2):
                    report = fleet_rate(bag, out / f"fleet_{workers}", workers, engine)
                    rate = report["timing"]["pairs_per_s"]
                    rates.setdefault((label, runs[workers]), []).append(rate)
            for size, bag in drivers.items():
                for transport in (False, True):
                    out = folder / f"{round_}_driver_{size}_{transport}"
                    rate, read, written = driver_ceiling(bag, out, transport)
                    ceilings.setdefault((size, transport), []).append(rate)
                    megabytes[size] = (
                        read / args.driver_pairs / 1e6,
                        written / args.driver_pairs / 1e6,
                    )
    ray.shutdown()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    print(
        f"\nfusion rate, 320x256, median of {args.rounds} rounds (bag report: pairs over the "
        "fusion pass, models loaded)"
    )
    print(f"{'engine':>12} {'run':>16} {'pairs/s':>8} {'min-max':>15} {'vs 1 worker':>12}")
    for label, _, _ in engines:
        one = statistics.median(rates[label, runs[1]])
        for run in runs:
            values = rates[label, run]
            rate = statistics.median(values)
            ratio = f"{rate / one:.2f}x" if run == runs[2] else ""
            spread = f"{min(values):.2f}-{max(values):.2f}"
            print(f"{label:>12} {run:>16} {rate:>8.2f} {spread:>15} {ratio:>12}")

    print(
        f"\ndriver ceiling in pairs/s, median of {args.rounds} rounds ({args.driver_pairs} pairs, "
        "copy-topics all, mcap)"
    )
    print(
        f"{'size':>8} {'read+write':>11} {'+ Ray':>8} {'MB read/pair':>13} {'MB written/pair':>16}"
    )
    for size in sizes:
        bare = statistics.median(ceilings[size, False])
        with_ray = statistics.median(ceilings[size, True])
        print(
            f"{size:>8} {bare:>11.0f} {with_ray:>8.0f} {megabytes[size][0]:>13.2f} "
            f"{megabytes[size][1]:>16.2f}"
        )

    ceiling = statistics.median(ceilings["640x480", True])
    per_pair = sum(megabytes["640x480"])
    low, high = args.gpu_pairs_per_s
    print(f"\nestimate at 640x480: GPU workers at {low:g}-{high:g} pairs/s each, one driver")
    print(f"{'GPUs':>5} {'workers alone':>14} {'with one driver':>16} {'storage MB/s':>13}")
    for n in (1, 2, 4, 8, 16, 32, 64):
        lo, hi = min(n * low, ceiling), min(n * high, ceiling)
        print(
            f"{n:>5} {n * low:>6.0f}-{n * high:<7.0f} {lo:>7.0f}-{hi:<8.0f} "
            f"{lo * per_pair:>5.0f}-{hi * per_pair:<7.0f}"
        )
    gpus = f"{ceiling / high:.1f}-{ceiling / low:.1f}"
    print(f"one driver saturates at {ceiling:.0f} pairs/s, the work of {gpus} GPUs")


if __name__ == "__main__":
    main()
