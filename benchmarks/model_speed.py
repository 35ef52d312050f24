"""GIFNet and TIM model time per pair against the machine's matrix-product rate; prints tables.

    .venv/bin/python benchmarks/model_speed.py            # 320x256, 640x480, 1280x1024
    .venv/bin/python benchmarks/model_speed.py --quick    # 160x128, 320x256, fewer runs
    .venv/bin/python benchmarks/model_speed.py --sizes 640x480 \
        --variants baseline torch-auto tim-torch-auto tim_light-torch-auto tim-onnxruntime-fp32

Every variant (the plain eager baseline of benchmarks/baseline_network.py, the package's
network per backend and precision) runs on the same pair, round-robin: one timed run of
each variant per round, after one warm-up run each, so a change in machine load hits all
variants alike and the ratios are side by side. Each round also times a 2048² matrix
product in float32 and in bfloat16, which give the machine's rate at each precision; a
variant's FLOP floor is the model's FLOPs over the rate of the precision it runs at (its
matrix products and convolutions run at that precision). ``auto-auto`` is the default
engine (backend and precision auto), ``torch-auto`` the torch backend at automatic
precision: rows name what the rules chose. The CPU's model, the flags
that decide the rule and ONEDNN_MAX_CPU_ISA are printed with every table.
A variant named ``tim-…`` or ``tim_light-…`` (``[NETWORK-]BACKEND-PRECISION[-compile]``,
as benchmarks/memory.py takes them) runs TIM with this project's weights instead of GIFNet,
through the same engine; "vs base" is then its time against GIFNet's baseline, side by side.
FLOPs are counted with torch.utils.flop_counter on the "meta" device (no arithmetic): once
for the specification (the baseline) and once for what the optimised network executes; a
TIM row's GFLOP/s and floor use the FLOPs of the TIM module it runs (gifnet_ros.models.tim, without
the authors' two discarded stage-2 heads), counted the same way.
"first s" is each variant's warm-up run, which includes compilation where there is one
(torch.compile; the onnxruntime variant exports the graph into the cache beforehand if it
is not there yet, outside the timings).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import lru_cache, partial
from pathlib import Path

import cv2
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline_network import GIFNet as BaselineGIFNet
from memory import split_variant, variant_arg

from gifnet_ros.fusion.engine import FusionEngine
from gifnet_ros.models.gifnet import GIFNet
from gifnet_ros.models.tim import NETWORK_VARIANTS, TIM
from gifnet_ros.offline.sources import find_shared
from gifnet_ros.tools.arg_types import width_height

ROOT = Path(__file__).resolve().parents[1]
SHARED = find_shared() or ROOT.parent / "shared"  # $GIFNET_SHARED first, as the demo
REFERENCE = SHARED / "gifnet" / "reference"
MATMUL_N = 2048
BASELINE = "baseline eager fp32"
Runner = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@lru_cache(maxsize=4)
def pair(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A real RoadScene pair (the reference inputs) resized to the size, as network inputs."""
    out = []
    for which in ("a", "b"):
        image = cv2.imread(str(REFERENCE / f"RS_FLIR_00548_{which}.png"), cv2.IMREAD_GRAYSCALE)
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        out.append(torch.from_numpy(image).float()[None, None] / 255.0)
    return out[0], out[1]


def _inplace_addmm_flops(
    target: torch.Size, a: torch.Size, b: torch.Size, *args: object, **kwargs: object
) -> int:
    """FLOPs of x.addmm_(a, b), which FlopCounterMode does not count by itself."""
    return 2 * a[0] * a[1] * b[1]


def count_flops(build: Callable[[], torch.nn.Module], height: int, width: int) -> int:
    """FLOPs of one forward of the module ``build()`` makes, counted on the meta device
    (in-place products included)."""
    with torch.device("meta"):
        model = build().eval()
        first = torch.zeros(1, 1, height, width)
    mapping = {torch.ops.aten.addmm_: _inplace_addmm_flops}
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=mapping) as c:
        model(first, first)
    return c.get_total_flops()


def matmul_seconds(dtype: torch.dtype = torch.float32) -> float:
    """One 2048² matrix product (2·2048³ FLOPs) in `dtype`."""
    a, b = torch.rand(MATMUL_N, MATMUL_N, dtype=dtype), torch.rand(MATMUL_N, MATMUL_N, dtype=dtype)
    began = time.perf_counter()
    torch.mm(a, b)
    return time.perf_counter() - began


def cpu_summary() -> str:
    """CPU model, the flags the precision rule reads, and oneDNN's ISA cap: what a figure
    depends on, printed with it because the machines of this project change."""
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    shown = [
        f
        for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")
        if f in flags
    ]
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "unset")
    return f"{model}; flags {' '.join(shown) or 'none of avx2/avx512'}; ONEDNN_MAX_CPU_ISA={cap}"


_BASELINE_CHILD = """
import sys
sys.path.insert(0, {bench!r})
import torch
if {threads}:
    torch.set_num_threads({threads})
from baseline_network import load_baseline
from model_speed import pair
model = load_baseline({weights!r})
for line in sys.stdin:
    height, width = (int(v) for v in line.split())
    with torch.inference_mode():
        model(*pair(height, width))
    print("done", flush=True)
"""


def baseline_runner(weights: Path, threads: int | None) -> Runner:
    """The baseline in a child process with PyTorch's default allocator (as it shipped):
    the engine's allocator setting (gifnet_ros/fusion/allocator.py) is process-wide and would speed
    it up too."""
    code = _BASELINE_CHILD.format(
        bench=str(ROOT / "benchmarks"), weights=str(weights), threads=threads or 0
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert child.stdin is not None and child.stdout is not None

    def run(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        child.stdin.write(f"{first.shape[-2]} {first.shape[-1]}\n")
        child.stdin.flush()
        if child.stdout.readline().strip() != "done":
            raise RuntimeError("the baseline child process failed (see its stderr above)")
        return first

    return run


def runners(args: argparse.Namespace) -> tuple[dict[str, Runner], dict[str, str]]:
    """Name → function(first, second) running one network forward, for each variant asked;
    and name → the network it runs (gifnet for the baseline)."""
    out: dict[str, Runner] = {}
    networks: dict[str, str] = {}
    for variant in args.variants:
        if variant == "baseline":
            out[BASELINE] = baseline_runner(args.weights, args.threads)
            networks[BASELINE] = "gifnet"
            continue
        network, backend, precision, extra = split_variant(variant)
        engine = FusionEngine(
            args.weights if network == "gifnet" else None,  # TIM: this project's weights
            device="cpu",
            precision=precision,
            backend=backend,
            compile=extra == ["compile"],
            network=network,
        )
        label = precision if precision != "auto" else f"auto={engine.precision}"
        runs = backend if backend != "auto" else f"auto={engine.backend}"
        name = " ".join([*([network] if network != "gifnet" else []), runs, label, *extra])
        out[name], networks[name] = engine.run_model, network
    return out, networks


def runs_at(name: str) -> str:
    """The precision a variant's products run at: bf16 for bf16 rows, else fp32."""
    return "bf16" if "bf16" in name else "fp32"


def bench_size(
    height: int, width: int, runs: int, variants: dict[str, Runner]
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, float]]:
    """Round-robin timing: per variant the list of seconds per pair; the matmul seconds per
    precision; per variant the seconds of its first (warm-up) run (includes compilation)."""
    first, second = pair(height, width)
    warm_up: dict[str, float] = {}
    for name, run in variants.items():  # allocator, oneDNN kernels, lazy inits, compilation
        began = time.perf_counter()
        run(first, second)
        warm_up[name] = time.perf_counter() - began
    times: dict[str, list[float]] = {name: [] for name in variants}
    matmul: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(runs):
        matmul["fp32"].append(matmul_seconds())
        matmul["bf16"].append(matmul_seconds(torch.bfloat16))
        for name, run in variants.items():
            began = time.perf_counter()
            run(first, second)
            times[name].append(time.perf_counter() - began)
    return times, matmul, warm_up


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["320x256", "640x480", "1280x1024"])
    p.add_argument("--runs", type=int, default=5, help="timed runs per variant (default 5)")
    p.add_argument(
        "--large-runs", type=int, default=3, help="timed runs at ≥ 1 megapixel (default 3)"
    )
    p.add_argument(
        "--variants",
        nargs="+",
        type=variant_arg,
        default=["baseline", "torch-auto", "torch-fp32"],
        help="baseline and/or [NETWORK-]BACKEND-PRECISION[-compile] (torch-auto, torch-fp32, "
        "torch-bf16, onnxruntime-fp32, torch-fp32-compile, tim-torch-auto, "
        "tim_light-torch-auto, tim-onnxruntime-fp32, ...)",
    )
    p.add_argument(
        "--no-baseline-above",
        type=int,
        default=1_000_000,
        metavar="PIXELS",
        help="skip the baseline above this many pixels (default 1e6: at 1280x1024 it needs "
        "13 GB beside the other variants)",
    )
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help="160x128 and 320x256, 5 runs")
    p.add_argument("--weights", type=Path, default=SHARED / "gifnet" / "weights" / "Final.model")
    p.add_argument(
        "--json", type=Path, help="also write the rows as JSON (for plot_performance.py)"
    )
    args = p.parse_args()
    if args.quick:
        args.sizes = ["160x128", "320x256"]
    if args.threads:
        torch.set_num_threads(args.threads)
    variants, networks = runners(args)
    print(cpu_summary())
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )
    print(
        f"{'size':>9} {'variant':>28} {'runs':>4} {'median s':>9} {'min s':>7} "
        f"{'vs base':>7} {'GFLOP/s':>8} {'floor s':>7} {'/floor':>6} {'first s':>7}"
    )
    summary, rows = [], []
    for size in args.sizes:
        width, height = width_height(size)
        pixels = height * width
        runs = args.large_runs if pixels >= 1_000_000 else args.runs
        chosen = {
            name: run
            for name, run in variants.items()
            if not (name == BASELINE and pixels > args.no_baseline_above)
        }
        spec_flops = count_flops(BaselineGIFNet, height, width)
        executed_flops = count_flops(GIFNet, height, width)
        # What a row's network computes per pair: GIFNet's specification, or the TIM module.
        flops = {"gifnet": spec_flops}
        for network in set(networks.values()) - {"gifnet"}:
            flops[network] = count_flops(partial(TIM, NETWORK_VARIANTS[network]), height, width)
        times, matmul, warm_up = bench_size(height, width, runs, chosen)
        rates = {k: 2 * MATMUL_N**3 / statistics.median(v) for k, v in matmul.items()}
        base = statistics.median(times[BASELINE]) if BASELINE in times else None
        for name, seconds in times.items():
            median = statistics.median(seconds)
            row_flops = flops[networks[name]]
            floor = row_flops / rates[runs_at(name)]
            ratio = f"{base / median:6.2f}x" if base else "    n/a"
            print(
                f"{size:>9} {name:>28} {runs:>4} {median:9.3f} {min(seconds):7.3f} {ratio:>7} "
                f"{row_flops / median / 1e9:8.1f} {floor:7.3f} {median / floor:6.2f} "
                f"{warm_up[name]:7.1f}"
            )
            rows.append(
                {
                    "size": size,
                    "pixels": pixels,
                    "variant": name,
                    "network": networks[name],
                    "median_s": median,
                    "floor_s": floor,
                    "precision": runs_at(name),
                }
            )
        summary.append((size, spec_flops, executed_flops, rates, flops))
    print()
    print(
        f"{'size':>9} {'spec GFLOP':>10} {'GFLOP/kpx':>9} {'executed GFLOP':>14} "
        f"{'fp32 matmul GFLOP/s':>19} {'bf16 matmul GFLOP/s':>19}"
    )
    for size, spec, executed, rates, flops in summary:
        width, height = width_height(size)
        print(
            f"{size:>9} {spec / 1e9:10.1f} {spec / (height * width) * 1e3 / 1e9:9.3f} "
            f"{executed / 1e9:14.1f} {rates['fp32'] / 1e9:19.1f} {rates['bf16'] / 1e9:19.1f}"
        )
        for network in sorted(flops.keys() - {"gifnet"}):
            print(f"{size:>9} {network}: {flops[network] / 1e9:.1f} GFLOP (the TIM module run)")
    print(
        f"load average {os.getloadavg()[0]:.2f} at the end; GFLOP/s column = spec FLOPs (TIM "
        "rows: the TIM module's) / median time; floor = those FLOPs / median matmul rate, at "
        "the variant's precision, of the same rounds"
    )
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_summary(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
