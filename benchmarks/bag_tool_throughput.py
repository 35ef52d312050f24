"""Throughput of gifnet-fuse-bag on a bag built from a shared M3SVD clip; prints a table.

    .venv/bin/python benchmarks/bag_tool_throughput.py --sizes 640x480 160x120 --max-frames 20
    .venv/bin/python benchmarks/bag_tool_throughput.py --backend onnxruntime   # whole clip, VGA

For each size a bag is built with gifnet-make-bag (mono16 thermal, 3 ms jitter, 5 ms thermal
offset) in a temporary directory and fused with gifnet-fuse-bag; the figures come from the
tool's own --report: pairs/s over the fusion pass and the share of that time spent in the
network forward (the rest is reading, decoding, normalising, colour conversion and writing).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from gifnet_ros.offline.sources import find_shared
from gifnet_ros.tools import fuse_bag as bag_tool
from gifnet_ros.tools import make_bag

ROOT = Path(__file__).resolve().parents[1]
SHARED = find_shared() or ROOT.parent / "shared"  # $GIFNET_SHARED first, as the demo


def run(
    clip: str,
    size: str,
    frames: int | None,
    storage: str,
    device: str,
    weights: Path,
    backend: str,
) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        bag, out, report = Path(tmp, "in"), Path(tmp, "out"), Path(tmp, "report.json")
        data = SHARED / "data" / "m3svd"
        build = [str(bag), "--thermal", str(data / "infrared" / f"{clip}.mp4"),
                 "--rgb", str(data / "visible" / f"{clip}.mp4"), "--thermal-encoding", "mono16",
                 "--jitter-ms", "3", "--thermal-offset-ms", "5", "--storage", storage,
                 "--resize", size]
        if frames:
            build += ["--max-frames", str(frames)]
        assert make_bag.main(build) == 0
        code = bag_tool.main([  # its own summary goes to stdout above the table row
            str(bag), "-o", str(out), "--thermal-topic", "/thermal/image", "--rgb-topic",
            "/rgb/image", "--weights", str(weights), "--device", device, "--storage", storage,
            "--report", str(report), "--no-progress", "--backend", backend,
        ])
        assert code == 0
        return json.loads(report.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip", default="1230_1202", help="M3SVD clip (default: the longer one)")
    p.add_argument("--sizes", nargs="+", default=["640x480"], help="WxH per run")
    p.add_argument("--max-frames", type=int, help="default: the whole clip")
    p.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default="torch", help="engine backend (default torch)")
    p.add_argument("--weights", type=Path, default=SHARED / "gifnet" / "weights" / "Final.model")
    args = p.parse_args()
    print(f"{'size':>9} {'pairs':>6} {'scan s':>7} {'fusion s':>9} {'pairs/s':>8} "
          f"{'s/pair':>7} {'model':>6} {'other ms/pair':>14}")
    for size in args.sizes:
        report = run(
            args.clip, size, args.max_frames, args.storage, args.device, args.weights, args.backend
        )
        timing, fused = report["timing"], report["pairs"]["fused"]
        print(
            f"{size:>9} {fused:>6} {timing['scan_s']:>7.2f} {timing['fusion_s']:>9.1f} "
            f"{timing['pairs_per_s']:>8.3f} {timing['fusion_s'] / fused:>7.2f} "
            f"{100 * timing['model_share']:>5.0f}% "
            f"{1000 * (timing['fusion_s'] - timing['model_s']) / fused:>14.1f}",
            flush=True,
        )
    print(f"clip {args.clip}, storage {args.storage}, device {args.device}, backend {args.backend}")


if __name__ == "__main__":
    main()
