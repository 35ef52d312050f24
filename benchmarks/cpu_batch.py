"""Pairs per second of FusionEngine.fuse_batch on the CPU, batch by batch; prints a table.

    .venv/bin/python benchmarks/cpu_batch.py                       # 320x256 and 640x480
    .venv/bin/python benchmarks/cpu_batch.py --sizes 320x256 --batches 1 2 --runs 2

The bag tools' --batch and the node's several heads go through fuse_batch; on a GPU a batch
keeps the device busy, on a CPU it can only save per-call overhead and costs memory. Each
engine (``auto``, the default; ``torch-fp32``; ``torch-bf16``) fuses the same real RoadScene
pair resized to each size, a warm-up call per (size, batch), then ``--runs`` timed calls;
the table gives the median pairs/s and each batch's ratio to batch 1 of the same engine, all
measured side by side in one process. The CPU's flags and the engine's instruction set are
printed with it: the figures depend on both.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_speed import cpu_summary

from gifnet_ros.fusion.engine import FusionEngine
from gifnet_ros.offline.sources import find_shared
from gifnet_ros.tools.arg_types import fusion_width_height

ROOT = Path(__file__).resolve().parents[1]
SHARED = find_shared() or ROOT.parent / "shared"
ENGINES = {
    "auto": {},
    "torch-fp32": {"backend": "torch", "precision": "fp32"},
    "torch-bf16": {"backend": "torch", "precision": "bf16"},
}


def real_pair(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """RoadScene's first pair (grey thermal, RGB) at ``size`` (width, height)."""
    folder = SHARED / "data" / "roadscene"
    name = sorted((folder / "ir").iterdir())[0].name
    thermal = cv2.imread(str(folder / "ir" / name), cv2.IMREAD_GRAYSCALE)
    rgb = cv2.cvtColor(cv2.imread(str(folder / "vis" / name)), cv2.COLOR_BGR2RGB)
    return (
        cv2.resize(thermal, size, interpolation=cv2.INTER_AREA),
        cv2.resize(rgb, size, interpolation=cv2.INTER_AREA),
    )


def pairs_per_second(engine: FusionEngine, pair: tuple, batch: int, runs: int) -> float:
    """Median pairs/s of ``runs`` calls of ``batch`` copies of ``pair``, after one warm-up."""
    pairs = [pair] * batch
    engine.fuse_batch(pairs)
    seconds = []
    for _ in range(runs):
        began = time.perf_counter()
        engine.fuse_batch(pairs)
        seconds.append(time.perf_counter() - began)
    return batch / statistics.median(seconds)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--sizes", nargs="+", type=fusion_width_height, default=[(320, 256), (640, 480)])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 2, 4, 8])
    p.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    p.add_argument("--runs", type=int, default=3, help="timed calls per cell (default 3)")
    p.add_argument("--weights", type=Path, default=SHARED / "gifnet" / "weights" / "Final.model")
    args = p.parse_args()
    print(f"# {cpu_summary()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    header = f"{'engine':>11} {'size':>8} " + " ".join(f"{'b' + str(b):>12}" for b in args.batches)
    for name in args.engines:
        engine = FusionEngine(args.weights, device="cpu", **ENGINES[name])
        print(f"# {name}: {engine.describe()}")
        print(header)
        for width, height in args.sizes:
            pair = real_pair((width, height))
            rates = [pairs_per_second(engine, pair, b, args.runs) for b in args.batches]
            cells = " ".join(f"{r:6.3f} {r / rates[0]:4.2f}x" for r in rates)
            print(f"{name:>11} {f'{width}x{height}':>8} {cells}", flush=True)
        del engine
    print("cells: median pairs/s, and its ratio to batch 1 of the same engine and size")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
