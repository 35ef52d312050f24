"""One picture of GIFNet's and TIM's speed and memory: s/pair, peak RSS against resolution.

    .venv/bin/python benchmarks/model_speed.py --sizes 320x256 640x480 \
        --variants baseline torch-auto torch-fp32 onnxruntime-fp32 --json speed.json
    .venv/bin/python benchmarks/memory.py --sizes 320x256 640x480 --json memory.json
    .venv/bin/python benchmarks/plot_performance.py speed.json memory.json \
        -o benchmarks/performance.png

Left: seconds per pair for each backend and precision, with the FLOP floors (each
network's FLOPs, GIFNet's specification or the TIM module's, over the machine's measured fp32
and bf16 matrix-product rates) drawn as dashed (fp32) and dotted (bf16) lines. Right: peak
resident memory per variant. Both against megapixels, from the JSON the two benchmark scripts
write; the CPU line of the speed run is the title.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on robots or CI
import matplotlib.pyplot as plt  # after the backend is chosen


def _series(rows: list[dict], key: str, value: str) -> dict[str, list[tuple[float, float]]]:
    """Rows → {label: [(megapixels, value), ...]} sorted by size."""
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        out[row[key]].append((row["pixels"] / 1e6, row[value]))
    return {label: sorted(points) for label, points in out.items()}


def plot(speed: dict, memory: dict, output: Path) -> None:
    """Draw both panels into `output` (PNG)."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for label, points in _series(speed["rows"], "variant", "median_s").items():
        left.plot(*zip(*points, strict=True), marker="o", label=label)
    # One floor per network (each has its own FLOPs) and precision (its own product rate).
    floors: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for row in speed["rows"]:
        key = (row.get("network", "gifnet"), row["precision"])
        floors[key].append((row["pixels"] / 1e6, row["floor_s"]))
    for (network, precision), points in floors.items():
        points = sorted(set(points))
        left.plot(
            *zip(*points, strict=True),
            linestyle="--" if precision == "fp32" else ":",
            color={"gifnet": "black", "tim": "dimgrey"}.get(network, "darkgrey"),
            label=f"{network} FLOP floor {precision}",
        )
    left.set(xlabel="megapixels", ylabel="seconds per pair (median)", title="model time")
    left.set_yscale("log")  # the eager baseline is ten times the rest
    left.set_ylim(top=left.get_ylim()[1] * 30)  # headroom above the lines for the legend
    left.legend(fontsize=7, loc="upper left", ncol=2)
    left.grid(alpha=0.3)
    for label, points in _series(memory["rows"], "variant", "peak").items():
        right.plot(*zip(*points, strict=True), marker="o", label=label)
    right.set(xlabel="megapixels", ylabel="peak RSS (MB)", title="peak resident memory")
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    figure.suptitle(speed.get("cpu", ""), fontsize=9)
    figure.tight_layout()
    figure.savefig(output, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("speed", type=Path, help="model_speed.py --json output")
    p.add_argument("memory", type=Path, help="memory.py --json output")
    p.add_argument("-o", "--output", type=Path, default=Path("benchmarks/performance.png"))
    args = p.parse_args()
    plot(json.loads(args.speed.read_text()), json.loads(args.memory.read_text()), args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
