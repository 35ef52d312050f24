"""Peak resident memory (RSS) of one GIFNet or TIM fusion against resolution; prints a table.

    .venv/bin/python benchmarks/memory.py              # 320x256, 640x480, 1280x1024
    .venv/bin/python benchmarks/memory.py --quick      # 160x128, 320x256
    .venv/bin/python benchmarks/memory.py --sizes 640x480 \
        --variants torch-auto tim-torch-auto tim_light-torch-auto tim-onnxruntime-fp32

Each (size, variant) runs in a fresh Python process, so one peak cannot hide another: the
child loads the model, records its RSS, runs ``--pairs`` forwards on a pair of that size and
reports its peak RSS (getrusage ru_maxrss). "model" is RSS after loading (Python, torch,
weights), "peak" the process's high-water mark, "fusion" the difference: what the forwards
add. ``--then SIZE`` follows them with one pair of another size and one more of the first, as
a robot whose camera changes resolution: "peak" then covers the whole sequence and "after"
is the RSS left at its end (what a runtime keeps between pairs, e.g. ONNX Runtime's arena).
``auto-auto`` is the default engine (backend and precision auto), ``torch-auto`` the torch
backend at automatic precision; rows name what auto chose. A variant is
``[NETWORK-]BACKEND-PRECISION``: GIFNet (``--weights``) unless it starts with ``tim`` or
``tim_light`` (TIM with this project's weights, not the authors').
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from gifnet_ros.models.onnx import NETWORKS
from gifnet_ros.offline.sources import find_shared  # the children measure memory, not this process

ROOT = Path(__file__).resolve().parents[1]
SHARED = find_shared() or ROOT.parent / "shared"  # $GIFNET_SHARED first, as the demo
WEIGHTS = SHARED / "gifnet" / "weights" / "Final.model"

_CHILD = r"""
import json, os, resource, sys
sys.path.insert(0, {bench!r})
import torch
height, width, variant, weights = {height}, {width}, {variant!r}, {weights!r}
network, backend, precision = {network!r}, {backend!r}, {precision!r}

def rss_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

if variant == "baseline":
    from baseline_network import load_baseline
    model = load_baseline(weights)
    run = lambda a, b: model(a, b)
else:
    from gifnet_ros.fusion.engine import FusionEngine
    engine = FusionEngine(
        weights if network == "gifnet" else None,
        device="cpu",
        precision=precision,
        backend=backend,
        network=network,
    )
    run = engine.run_model
    variant = variant + ("=" + engine.precision if precision == "auto" else "")
    variant = variant + (" (" + engine.backend + ")" if backend == "auto" else "")
sizes = [(height, width)] * {pairs} + ([{then}, (height, width)] if {then} else [])
loaded = rss_mb()
with torch.inference_mode():
    for size in sizes:
        run(torch.rand(1, 1, *size), torch.rand(1, 1, *size))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"model": loaded, "peak": peak, "after": rss_mb(), "variant": variant}}))
"""


def split_variant(text: str) -> tuple[str, str, str, list[str]]:
    """``[NETWORK-]BACKEND-PRECISION[-EXTRA]`` → (network, backend, precision, extras); the
    network is gifnet where none is named (``torch-auto``, ``tim-onnxruntime-fp32``)."""
    parts = text.split("-")
    network = parts.pop(0) if parts[0] in NETWORKS else "gifnet"
    if len(parts) < 2:
        raise ValueError(f"variant {text!r}: expected [NETWORK-]BACKEND-PRECISION")
    backend, precision, *extra = parts
    return network, backend, precision, extra


def variant_arg(text: str) -> str:
    """argparse type of --variants: the name as given, once it parses (or is baseline)."""
    if text != "baseline":
        try:
            split_variant(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def measure(
    height: int,
    width: int,
    variant: str,
    weights: Path,
    pairs: int = 1,
    then: tuple[int, int] | None = None,
) -> dict[str, float]:
    """Run the fusions in a fresh interpreter; its RSS after loading, at peak and at the end."""
    network = backend = precision = None
    if variant != "baseline":
        network, backend, precision, _ = split_variant(variant)
    code = _CHILD.format(
        network=network,
        backend=backend,
        precision=precision,
        bench=str(ROOT / "benchmarks"),
        height=height,
        width=width,
        variant=variant,
        weights=str(weights),
        pairs=pairs,
        then=then,
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )
    if done.returncode != 0:
        reason = "killed, out of memory?" if done.returncode < 0 else done.stderr.strip()[-300:]
        raise RuntimeError(f"{variant} at {width}x{height} failed ({reason})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["320x256", "640x480", "1280x1024"])
    p.add_argument(
        "--variants",
        nargs="+",
        type=variant_arg,
        default=["baseline", "torch-auto", "torch-fp32", "torch-bf16", "onnxruntime-fp32"],
        help="baseline and/or [NETWORK-]BACKEND-PRECISION (torch-auto, onnxruntime-fp32, "
        "tim-torch-auto, tim_light-torch-fp32, tim-onnxruntime-fp32, ...)",
    )
    p.add_argument("--pairs", type=int, default=1, help="pairs of each size (default 1)")
    p.add_argument("--then", metavar="SIZE", help="then one pair of this size and one more")
    p.add_argument(
        "--json", type=Path, help="also write the rows as JSON (for plot_performance.py)"
    )
    p.add_argument("--quick", action="store_true", help="160x128 and 320x256 only")
    p.add_argument("--weights", type=Path, default=WEIGHTS)
    args = p.parse_args()
    for variant in args.variants:
        if variant != "baseline" and split_variant(variant)[3]:
            p.error(f"variant {variant!r}: memory.py takes [NETWORK-]BACKEND-PRECISION only")
    if args.quick:
        args.sizes = ["160x128", "320x256"]
    then = None
    if args.then:
        then_width, then_height = (int(v) for v in args.then.lower().split("x"))
        then = (then_height, then_width)
    print(f"{args.pairs} pair(s) per size" + (f", then {args.then} and one more" if then else ""))
    print(
        f"{'size':>9} {'variant':>27} {'model MB':>9} {'peak MB':>8} {'fusion MB':>9} "
        f"{'fusion B/px':>11} {'after MB':>8}"
    )
    rows = []
    for size in args.sizes:
        width, height = (int(v) for v in size.lower().split("x"))
        for variant in args.variants:
            try:
                result = measure(height, width, variant, args.weights, args.pairs, then)
            except RuntimeError as exc:
                print(f"{size:>9} {variant:>27} {exc}")
                continue
            fusion = result["peak"] - result["model"]
            print(
                f"{size:>9} {result['variant']:>27} {result['model']:9.0f} {result['peak']:8.0f} "
                f"{fusion:9.0f} {fusion * 2**20 / (height * width):11.0f} {result['after']:8.0f}"
            )
            rows.append({"size": size, "pixels": height * width, **result})
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=1))


if __name__ == "__main__":
    main()
