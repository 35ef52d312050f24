"""Quality cost of reduced-resolution fusion (max_pixels / inference_scale) on RoadScene.

    .venv/bin/python benchmarks/resolution_quality.py            # 20 pairs, scales 0.75 0.5 0.35
    .venv/bin/python benchmarks/resolution_quality.py --quick    # 4 pairs, scale 0.5

For each RoadScene pair (thermal + visible, the grey fused luminance) the engine fuses at
full resolution and at each scale with both restore rules; the table gives PSNR and SSIM of
the reduced-size result against the full-resolution one (mean and worst over the pairs), and
the share of the network's pixels that remain (its cost scales with them). SSIM is the usual
Gaussian-window form (σ 1.5, K1 0.01, K2 0.03) on the 0-255 uint8 images.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import cv2
import numpy as np

from gifnet_ros.fusion.engine import RESTORE_RULES, FusionEngine
from gifnet_ros.offline.sources import find_shared

ROOT = Path(__file__).resolve().parents[1]
SHARED = find_shared() or ROOT.parent / "shared"  # $GIFNET_SHARED first, as the demo


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two grey uint8 images (Gaussian window σ = 1.5)."""
    x, y = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(image: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(image, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    score = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(score.mean())


def pairs(limit: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The first `limit` RoadScene pairs: (name, thermal grey, visible RGB)."""
    data = SHARED / "data" / "roadscene"
    out = []
    for path in sorted((data / "ir").glob("*.jpg"))[:limit]:
        ir = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        vis = cv2.imread(str(data / "vis" / path.name), cv2.IMREAD_COLOR)
        out.append((path.stem, ir, cv2.cvtColor(vis, cv2.COLOR_BGR2RGB)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=20, help="RoadScene pairs (default 20)")
    p.add_argument("--scales", type=float, nargs="+", default=[0.75, 0.5, 0.35])
    p.add_argument("--quick", action="store_true", help="4 pairs, scale 0.5")
    p.add_argument("--weights", type=Path, default=SHARED / "gifnet" / "weights" / "Final.model")
    args = p.parse_args()
    if args.quick:
        args.pairs, args.scales = 4, [0.5]
    engine = FusionEngine(args.weights, "cpu", mode="grey")
    scores: dict[tuple[float, str], list[tuple[float, float]]] = {}
    pixels: dict[float, list[float]] = {}
    chosen = pairs(args.pairs)
    for _name, ir, vis in chosen:
        engine.inference_scale = 1.0
        full = engine.fuse(ir, vis)
        for scale in args.scales:
            engine.inference_scale = scale
            height, width = engine.inference_size(*ir.shape)
            pixels.setdefault(scale, []).append(height * width / ir.size)
            for restore in RESTORE_RULES:
                engine.restore = restore
                out = engine.fuse(ir, vis)
                scores.setdefault((scale, restore), []).append((psnr(out, full), ssim(out, full)))
    size = f"{chosen[0][1].shape[1]}x{chosen[0][1].shape[0]}"
    print(f"{len(chosen)} RoadScene pairs (e.g. {size}), grey fused luminance vs full resolution")
    print(
        f"{'scale':>5} {'pixels':>6} {'restore':>8} {'PSNR dB':>8} {'worst':>6} "
        f"{'SSIM':>6} {'worst':>6}"
    )
    for (scale, restore), values in scores.items():
        p_values, s_values = [v[0] for v in values], [v[1] for v in values]
        print(
            f"{scale:5.2f} {statistics.mean(pixels[scale]):6.1%} {restore:>8} "
            f"{statistics.mean(p_values):8.2f} {min(p_values):6.2f} "
            f"{statistics.mean(s_values):6.4f} {min(s_values):6.4f}"
        )


if __name__ == "__main__":
    main()
