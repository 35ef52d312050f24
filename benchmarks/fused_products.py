"""GIFNet's products through oneDNN's fused 1×1 convolutions against addmm; prints two tables.

    .venv/bin/python benchmarks/fused_products.py                   # fp32, 320x256 and 640x480
    .venv/bin/python benchmarks/fused_products.py --dtype bfloat16  # on a CPU with native bf16

First each product of the transformer alone, at the row count of one band (16384 pixels):
``addmm`` (+ ``relu_``) against ``onednn.linear``, ``addmm_`` against ``onednn.accumulate``.
Then the whole network on a real RoadScene pair (the reference inputs) per size, in one
process, the two paths alternating round by round after a warm-up of each, so that the
machine's load hits both alike: medians, their ratio, and the largest difference between the
two outputs on the 0-255 scale. ``--dtype bfloat16`` measures the path for bf16 even though
the package leaves it out (models/onednn.py: FUSED_DTYPES), where this CPU runs it at all.
Peak memory is benchmarks/memory.py's (fresh processes; the path is the default for fp32).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_speed import SHARED, cpu_summary, pair

from gifnet_ros.fusion.allocator import retain_freed_memory
from gifnet_ros.models import onednn
from gifnet_ros.models.gifnet import load_model
from gifnet_ros.tools.arg_types import width_height

ROWS = 16384  # a band of the eager network (models/gifnet.py: _BAND_ROWS)
# (Cin, Cout, ReLU) of the biased products, (Cin, Cout) of the in-place sums.
PRODUCTS = ((98, 98, False), (98, 196, False), (98, 196, True))
SUMS = ((98, 98), (196, 98))


def median_ms(call: Callable[[], object], runs: int) -> float:
    """Median time of `runs` calls after three untimed ones, in milliseconds."""
    for _ in range(3):
        call()
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1e3


def _biased(x: torch.Tensor, w_t: torch.Tensor, bias: torch.Tensor, relu: bool) -> torch.Tensor:
    """The package's plain path for a biased product: addmm, then ReLU in place if asked."""
    out = torch.addmm(bias, x, w_t)
    return out.relu_() if relu else out


def _row(name: str, plain: Callable[[], object], fused: Callable[[], object], runs: int) -> None:
    a, f = median_ms(plain, runs), median_ms(fused, runs)
    print(f"{name:>18} {a:9.2f} {f:9.2f} {f / a:6.3f}", flush=True)


def product_table(dtype: torch.dtype, runs: int) -> None:
    print(f"{'product':>18} {'addmm ms':>9} {'oneDNN ms':>9} {'ratio':>6}")
    for c_in, c_out, relu in PRODUCTS:
        x, weight = torch.randn(ROWS, c_in, dtype=dtype), torch.randn(c_out, c_in)
        bias = torch.randn(c_out)
        plain = partial(_biased, x, weight.to(dtype).t(), bias.to(dtype), relu)
        fused = partial(onednn.linear, x, weight, bias, relu)
        _row(f"{c_in}->{c_out}{' +ReLU' if relu else ''}", plain, fused, runs)
    for c_in, c_out in SUMS:
        x, weight = torch.randn(ROWS, c_in, dtype=dtype), torch.randn(c_out, c_in)
        out = torch.randn(ROWS, c_out, dtype=dtype)
        plain = partial(out.addmm_, x, weight.to(dtype).t())
        _row(f"+= {c_in}->{c_out}", plain, partial(onednn.accumulate, out, x, weight), runs)


def network_table(args: argparse.Namespace, dtype: torch.dtype) -> None:
    model = load_model(args.weights, "cpu")
    paths = {"addmm": frozenset(), "oneDNN": frozenset({dtype})}
    print(f"{'size':>8} {'addmm s':>8} {'oneDNN s':>8} {'ratio':>6} {'max diff':>9}")
    for width, height in args.sizes:
        first, second = pair(height, width)
        times: dict[str, list[float]] = {name: [] for name in paths}
        outputs: dict[str, torch.Tensor] = {}
        autocast = torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32)
        with torch.inference_mode(), autocast:
            for rnd in range(args.rounds + 1):  # round 0 is the warm-up
                for name, dtypes in paths.items():
                    onednn.FUSED_DTYPES = dtypes
                    began = time.perf_counter()
                    outputs[name] = model(first, second)
                    if rnd:
                        times[name].append(time.perf_counter() - began)
        plain, fused = (statistics.median(times[name]) for name in paths)
        diff = float((outputs["oneDNN"] - outputs["addmm"]).abs().max()) * 255
        size = f"{width}x{height}"
        print(f"{size:>8} {plain:8.3f} {fused:8.3f} {fused / plain:6.3f} {diff:9.2e}", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--sizes", nargs="+", type=width_height, default=[(320, 256), (640, 480)])
    p.add_argument("--rounds", type=int, default=6, help="timed rounds of the network (default 6)")
    p.add_argument("--runs", type=int, default=40, help="timed calls per product (default 40)")
    p.add_argument("--weights", type=Path, default=SHARED / "gifnet" / "weights" / "Final.model")
    args = p.parse_args()
    dtype = getattr(torch, args.dtype)
    retain_freed_memory()  # as the engine runs
    print(f"# {cpu_summary()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    onednn.FUSED_DTYPES = frozenset({dtype})
    if not onednn.usable(torch.zeros(1, dtype=dtype)):
        print(f"oneDNN's fused 1x1 convolution does not run in {args.dtype} here")
        return 1
    print(f"# products at {ROWS} rows, {args.dtype}, medians of {args.runs}")
    product_table(dtype, args.runs)
    print(f"# whole network, {args.dtype}, medians of {args.rounds} alternating rounds")
    network_table(args, dtype)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
