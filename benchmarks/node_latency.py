"""The live node's overhead: end-to-end latency minus the network's own time; prints a table.

    .venv/bin/python benchmarks/node_latency.py                  # 640x480, CPU, 3 runs x 3
    .venv/bin/python benchmarks/node_latency.py --size 160x120 --runs 5 --frames 10

A real node process is started (``python -m gifnet_ros.ros.node``) and fed M3SVD frame pairs over
DDS from this process, one pair at a time (the next pair is sent when the previous fused image
came back, so no pair waits behind another and none is dropped). Per pair:

- latency: RGB stamp (this process' clock when publishing) -> fused image received here;
- model: the network forward time the node measured for that pair (``model_last_s`` in its
  diagnostics, read once the diagnostics count the pair);
- overhead = latency - model: DDS transport of two inputs and one output, message <-> array
  conversion, thermal normalisation, alignment, colour conversion, executor and thread
  hand-offs;
- in-node: the node's own processing time minus model (``processing_last_s`` - model), the part
  of the overhead spent in the worker.

Each run reports median and p95 over its pairs; the last row is the median over runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from gifnet_ros.offline.sources import find_shared, m3svd_pairs
from gifnet_ros.ros.client import FusionClient
from gifnet_ros.ros.node_process import dds_environment, start_node, stop_node
from gifnet_ros.tools.arg_types import fusion_width_height

ROOT = Path(__file__).resolve().parents[1]
SHARED = find_shared() or ROOT.parent / "shared"  # $GIFNET_SHARED first, as the demo
COLUMNS = ("latency", "model", "overhead", "overhead p95", "in-node")


def measure(client: FusionClient, pairs: list, timeout: float) -> dict[str, float]:
    """One run: every pair once; returns the run's statistics in seconds."""
    latency, model, in_node = [], [], []
    for pair in pairs:
        stamp = client.publish_pair(pair)
        got = client.wait_fused(stamp, timeout)
        if got is None:
            sys.exit(f"no fused image within {timeout} s")
        # Every image the node fused came here, so once its count reaches ours, its "last"
        # timings are this pair's.
        received = len(client.fused)
        if not client.wait_diagnostics(lambda d, n=received: int(d["fused"]) >= n, 10.0):
            sys.exit("the node's diagnostics did not count the pair")
        values = dict(client.diagnostics)
        latency.append((got[1] - stamp) / 1e9)
        model.append(float(values["model_last_s"]))
        in_node.append(float(values["processing_last_s"]) - model[-1])
    overhead = [a - b for a, b in zip(latency, model, strict=True)]
    return {
        "latency": statistics.median(latency),
        "model": statistics.median(model),
        "overhead": statistics.median(overhead),
        "overhead p95": float(np.percentile(overhead, 95)),
        "in-node": statistics.median(in_node),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size", type=fusion_width_height, default=(640, 480), help="WxH (640x480)"
    )
    parser.add_argument("--frames", type=int, default=3, help="pairs per run (3)")
    parser.add_argument("--runs", type=int, default=3, help="runs (3)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clip", default="1230_1202", help="M3SVD clip")
    parser.add_argument(
        "--weights", type=Path, default=SHARED / "gifnet" / "weights" / "Final.model"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per pair")
    args = parser.parse_args()

    dds_environment()
    pairs = m3svd_pairs(args.clip, args.frames + 1, args.size, every=7, shared=SHARED)
    namespace = f"/gifnet_bench_{os.getpid()}"
    parameters = {
        "weights": str(args.weights),
        "device": args.device,
        "diagnostics_period": 0.1,
    }
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp, "node.log")
        process = start_node(namespace, parameters, log)
        client = FusionClient(namespace)
        try:
            client.wait_for_node(120, process)
            client.warm_up(pairs[0], args.timeout)  # first forward pass allocates; not timed
            width, height = args.size
            print(
                f"node overhead at {width}x{height}, device {args.device}, precision "
                f"{client.diagnostics.get('precision')}, {args.frames} pairs per run, seconds "
                "(median per run unless p95)"
            )
            print(f"{'run':>6} " + " ".join(f"{c:>13}" for c in COLUMNS))
            runs = []
            for run in range(args.runs):
                runs.append(measure(client, pairs[1:], args.timeout))
                print(f"{run + 1:>6} " + " ".join(f"{runs[-1][c]:>13.4f}" for c in COLUMNS))
            medians = {c: statistics.median(r[c] for r in runs) for c in COLUMNS}
            print(f"{'median':>6} " + " ".join(f"{medians[c]:>13.4f}" for c in COLUMNS))
        finally:
            client.close()
            if stop_node(process) != 0:
                print(log.read_text()[-2000:], file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
