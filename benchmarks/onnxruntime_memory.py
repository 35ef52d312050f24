"""ONNX Runtime session options, side by side: resident memory and time per pair; prints a table.

    .venv/bin/python benchmarks/onnxruntime_memory.py                 # 640x480, then 640x512
    .venv/bin/python benchmarks/onnxruntime_memory.py --size 320x256 --then 320x240 --rounds 1

The engine's sessions use ``export.session_options()``. This script runs GIFNet's exported
graph (exported into the cache first if missing) under those options and under the two
option sets used before them, to show what each choice buys:

- ``pattern+reuse``: ONNX Runtime's defaults (memory pattern and planned buffer reuse on),
- ``reuse``: memory pattern off, buffer reuse on,
- ``engine``: ``session_options()`` as the engine uses it.

``--before FILE`` adds a row ``before``: another export (e.g. one made by an earlier commit's
``gifnet-export``) under ONNX Runtime's defaults, to compare graph and options together.

Each (round, option set) runs in a fresh Python process, so that one peak cannot hide
another: ``--pairs`` pairs of the size, one of ``--then`` (a camera changing resolution), one
more of the size. The table gives the median seconds per pair of the size (each process's
first pair left out: it includes the arena's growth), its ratio to ``engine``, the RSS after
each pair, and the process's peak RSS (getrusage). Option sets alternate within each round,
so a change of machine load hits them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from model_speed import cpu_summary

from gifnet_ros.models.gifnet import load_model
from gifnet_ros.models.onnx import default_onnx_path, export_onnx
from gifnet_ros.offline.sources import find_shared
from gifnet_ros.tools.arg_types import width_height

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = (find_shared() or ROOT.parent / "shared") / "gifnet" / "weights" / "Final.model"
# Option set → the attributes it changes on session_options().
OPTION_SETS = {
    "pattern+reuse": {"enable_mem_pattern": True, "enable_mem_reuse": True},
    "reuse": {"enable_mem_reuse": True},
    "engine": {},
}

_CHILD = r"""
import json, resource, sys, time
import torch
from gifnet_ros.models.onnx import OnnxGIFNet, session_options
path, changes, sizes, threads = {path!r}, {changes!r}, {sizes!r}, {threads!r}

def rss_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

options = session_options(threads)
for name, value in changes.items():
    setattr(options, name, value)
session = OnnxGIFNet(path, options=options)
seconds, after = [], []
for width, height in sizes:
    first, second = torch.rand(2, 1, 1, height, width)
    began = time.perf_counter()
    session(first, second)
    seconds.append(time.perf_counter() - began)
    after.append(rss_mb())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": seconds, "after": after, "peak": peak}}))
"""


def run_child(path: Path, changes: dict[str, bool], sizes: list[tuple[int, int]], threads: int):
    """One process: the session under these option changes over `sizes`; its measurements."""
    code = _CHILD.format(path=str(path), changes=changes, sizes=sizes, threads=threads)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(f"onnxruntime_memory: child failed: {tail[0]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=width_height, default=(640, 480), help="WxH (default 640x480)")
    p.add_argument("--then", type=width_height, default=(640, 512), help="WxH (default 640x512)")
    p.add_argument("--pairs", type=int, default=3, help="pairs of --size first (default 3)")
    p.add_argument("--rounds", type=int, default=2, help="processes per option set (default 2)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--weights", type=Path, default=WEIGHTS)
    p.add_argument("--before", type=Path, help="an earlier export, run under the defaults")
    p.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = p.parse_args()
    path = default_onnx_path(args.weights)
    if not path.is_file():
        export_onnx(load_model(args.weights), path)
    runs = {name: (path, changes) for name, changes in OPTION_SETS.items()}
    if args.before:
        runs = {"before": (args.before, OPTION_SETS["pattern+reuse"]), **runs}
    sizes = [args.size] * args.pairs + [args.then, args.size]
    rows: dict[str, list[dict]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, (onnx, changes) in runs.items():
            rows[name].append(run_child(onnx, changes, sizes, args.threads))
    # Pairs of the main size, each process's first left out.
    timed = [i for i, size in enumerate(sizes) if size == args.size][1:]
    median = {
        name: statistics.median(r["seconds"][i] for r in runs for i in timed)
        for name, runs in rows.items()
    }
    w, h = args.size
    tw, th = args.then
    print(f"# {cpu_summary()}; {args.threads} threads; load {os.getloadavg()[0]:.2f}")
    print(f"# {args.pairs} pairs {w}x{h}, one {tw}x{th}, one {w}x{h}; {args.rounds} processes each")
    print(f"{'options':>14} {'s/pair':>7} {'vs engine':>9} {'peak MB':>8}  RSS MB after each pair")
    for name, runs in rows.items():
        after = " ".join(f"{mb:.0f}" for mb in runs[-1]["after"])
        peak = max(r["peak"] for r in runs)
        ratio = median[name] / median["engine"]
        print(f"{name:>14} {median[name]:7.2f} {ratio:8.2f}x {peak:8.0f}  {after}")
    if args.json:
        args.json.write_text(json.dumps({"sizes": sizes, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
