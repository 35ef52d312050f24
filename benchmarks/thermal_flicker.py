"""Flicker of 16-bit thermal: per-frame percentile stretch against the range smoothed in time.

    .venv/bin/python benchmarks/thermal_flicker.py            # GIFNet fusion, 7-12 min here
    .venv/bin/python benchmarks/thermal_flicker.py --quick    # classic_laplacian fusion, <1 min

The stream (issue "real thermal cameras", part 1). A radiometric camera watching a static
scene: frame 0 of the shared M3SVD clip (infrared and visible, 320×240), held for the whole
stream at the clip's frame rate (the clip's own camera walks, so no frame of it played is a
static scene), turned into Boson-like 16-bit counts ``7000 + 8·grey + drift + noise`` (drift:
a linear ramp of 300 counts over the stream; noise: Gaussian, σ 10 counts per pixel and
frame). A hot disc (radius 28 px, 3.2 % of the frame, ``7000 + 8·255 + 1500`` counts, above
everything in the scene) comes in from the right edge three times: fully in view (sliding in
and out over 0.3 s), then half in view at the edge with its depth wobbling so that its share of
the frame swings around 1 % (where the 99th percentile jumps between the scene and the disc
from frame to frame), then fully again. Stamps are exact: frame i at i/fps s.

Each rule stretches every thermal frame with ``normalize_thermal(frame, "fixed",
value_range=range)``, the range from ``smoothed_ranges`` over the frames' own 1-99 percentile
ranges (time constant 0 = the per-frame rule); the stretched frame is fused with the held
visible frame through FusionEngine (``thermal_rgb``, the fused luminance is measured).

Figures, per rule, for the stretched thermal image alone and for the fused image:

- static region: the pixels that the disc and its ring (below) never touch; only drift and
  noise change them, so every frame of the stream is a static-scene frame there, and any
  change of their brightness beyond the drift's is the stretch's doing.
- b(t): mean brightness (0-255) of the static region in frame t.
- ``rms dB``: root mean square of b(t) - b(t-1) over all frames: the flicker (a jump counts
  more than the same change spread over several frames, as a viewer sees it); ``x less``: the
  per-frame rule's rms dB divided by this rule's. ``mean|dB|`` and ``max|dB|``: the mean and
  largest |b(t) - b(t-1)| (the mean is the total variation per frame: smoothing spreads a
  step over several frames but cannot make the total smaller, so it falls far less).
- ``still|dB|``: the mean |b(t) - b(t-1)| over only the frames in which nothing moved (the
  disc's mask equals the previous frame's): the per-frame rule's jumps fall on the frames where
  the disc moves, a smoothed rule's fade goes on into the still frames after them.
- ``settle s``: the longest, over the two full visits' entries and leaves, of the seconds from
  the event (the disc's first frame in view; its first frame going out) until b(t) stays
  within 10 % of that event's change of the per-frame rule's b from the per-frame rule's b(t).
- contrast C(t): mean of the image over the disc's pixels in view minus the mean over its
  ring (pixels 4-14 px outside the disc, in view).
- ``t90``: per full visit, seconds from the disc's first frame in view until C(t) stays at or
  over 90 % of the per-frame rule's steady contrast (the median of its C(t) over the visit)
  up to the disc's going out; for the edge visit (where the per-frame rule's contrast itself
  swings) the share of its frames at or over that 90 %. ``min C``: the lowest C(t) over the
  full visits' frames so judged, as a share of that steady contrast.

``snap`` rows are a rejected variant (not in gifnet_ros.fusion.thermal), the default time constant
plus a snap to the frame's own range whenever that range leaves the smoothed one by more
than half the smoothed span: the faster answer to a change of scene, measured to decide.
The figure (docs/thermal_flicker.png): b(t) and C(t) of the fused image for the per-frame
rule and the default, the visits shaded.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from model_speed import cpu_summary

from gifnet_ros.fusion.engine import FusionEngine
from gifnet_ros.fusion.thermal import (
    DEFAULT_TIME_CONSTANT,
    Range,
    RangeFilter,
    frame_range,
    normalize_thermal,
    smoothed_ranges,
)
from gifnet_ros.offline.sources import find_shared, m3svd_pairs

ROOT = Path(__file__).resolve().parents[1]
SHARED = find_shared() or ROOT.parent / "shared"
SIZE = (320, 240)  # width, height
RADIUS = 28
HOT = 7000 + 8 * 255 + 1500
PERCENTILES = (1.0, 99.0)
# (first second, last second, how): the disc's visits.
VISITS = ((1.5, 4.0, "full"), (5.5, 8.5, "edge"), (9.5, 11.8, "full"))
SECONDS = 12.5
SLIDE = 0.3  # seconds to come fully in view / go out
SNAP_OUTSIDE = 0.5  # the snap variant: how far outside the smoothed range, in its spans


def disc_centres(fps: float, frames: int, rng: np.random.Generator) -> list[float | None]:
    """The disc's centre x per frame (None when out of view); its centre y is fixed."""
    width = SIZE[0]
    centres: list[float | None] = []
    for index in range(frames):
        t = index / fps
        centre = None
        for first, last, how in VISITS:
            if first <= t < last:
                into = min(t - first, last - t, SLIDE) / SLIDE  # 0 at the edge .. 1 in view
                if how == "full":
                    centre = width + RADIUS - into * (2 * RADIUS + 40)
                else:  # about 0.7 radius deep, wobbling: 0.5-1.5 % of the frame in view
                    depth = 0.7 * RADIUS + 0.3 * RADIUS * np.sin(2 * np.pi * 1.7 * t)
                    centre = width + RADIUS - into * (depth + rng.normal(0.0, 1.5))
        centres.append(centre)
    return centres


def stream(
    clip: str, seed: int
) -> tuple[float, list[np.ndarray], np.ndarray, list[np.ndarray | None]]:
    """(fps, 16-bit thermal frames, the held RGB frame, the disc's mask per frame)."""
    thermal_video = SHARED / "data" / "m3svd" / "infrared" / f"{clip}.mp4"
    fps = cv2.VideoCapture(str(thermal_video)).get(cv2.CAP_PROP_FPS)
    grey, rgb = m3svd_pairs(clip, 1, SIZE, 1, SHARED)[0]
    frames = round(SECONDS * fps)
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: SIZE[1], : SIZE[0]]
    scene = 7000.0 + 8.0 * grey.astype(np.float64)
    thermal, masks = [], []
    for index, centre in enumerate(disc_centres(fps, frames, rng)):
        counts = scene + 300.0 * index / frames + rng.normal(0.0, 10.0, scene.shape)
        mask = None
        if centre is not None:
            mask = (cols - centre) ** 2 + (rows - 0.45 * SIZE[1]) ** 2 <= RADIUS**2
            counts[mask] = HOT + rng.normal(0.0, 10.0, int(mask.sum()))
            mask = mask if mask.any() else None
        thermal.append(np.clip(np.rint(counts), 0, 65535).astype(np.uint16))
        masks.append(mask)
    return fps, thermal, rgb, masks


def snap_ranges(frames: Sequence[tuple[int, Range | None]], time_constant: float) -> list[Range]:
    """The rejected snap variant (in stamp order already): smoothing, but the frame's own range
    whenever it leaves the smoothed one by more than SNAP_OUTSIDE of the smoothed span."""
    smoother, out = RangeFilter(time_constant), []
    for stamp, own in frames:
        previous = smoother.update(stamp, None)  # the state, unchanged
        if previous is not None and own is not None:
            span = previous[1] - previous[0]
            if max(previous[0] - own[0], own[1] - previous[1]) > SNAP_OUTSIDE * span:
                smoother.reset()
        out.append(smoother.update(stamp, own))
    return out


def ring(mask: np.ndarray) -> np.ndarray:
    """The pixels 4-14 px outside the disc (in view): what the disc is seen against."""
    near = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9)))
    far = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (29, 29)))
    return (far > 0) & (near == 0)


def visit_frames(masks: list[np.ndarray | None]) -> list[list[int]]:
    """The frame indices of each visit (consecutive frames with the disc in view)."""
    visits: list[list[int]] = []
    for index, mask in enumerate(masks):
        if mask is None:
            continue
        if visits and visits[-1][-1] == index - 1:
            visits[-1].append(index)
        else:
            visits.append([index])
    return visits


def measure(
    images: list[np.ndarray], masks: list[np.ndarray | None], static: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(b(t), C(t)) of a rule's images (C is NaN without the disc in view)."""
    brightness = np.array([image[static].mean() for image in images])
    contrast = np.full(len(images), np.nan)
    for index, (image, mask) in enumerate(zip(images, masks, strict=True)):
        if mask is not None:
            contrast[index] = image[mask].mean() - image[ring(mask)].mean()
    return brightness, contrast


def t90(
    contrast: np.ndarray, reference: np.ndarray, visits: list[list[int]], fps: float
) -> tuple[list[str], float]:
    """Per visit: seconds from the disc's first frame in view until C(t) stays at or over 90 %
    of the reference rule's steady contrast (its median C over the visit) up to the disc's
    going out (the slide-out frames, where every rule's contrast changes, left out); for the
    edge visit, whose per-frame contrast itself swings, the share of its frames at 90 %. And
    the lowest C(t) over the full visits' frames so judged, as a share of that steady value."""
    out, lowest = [], float("inf")
    slide = round(SLIDE * fps)
    for frames, (_, _, how) in zip(visits, VISITS, strict=True):
        steady = float(np.median(reference[frames]))
        if how == "edge":
            out.append(f"{np.mean(contrast[frames] >= 0.9 * steady):.0%}")
            continue
        staying = contrast[frames[:-slide]]
        lowest = min(lowest, float(staying.min()) / steady)
        below = np.flatnonzero(staying < 0.9 * steady)
        out.append(f"{(below[-1] + 1) / fps:.2f}" if below.size else "0.00")
    return out, lowest


def settle(
    brightness: np.ndarray, reference: np.ndarray, visits: list[list[int]], fps: float
) -> float:
    """Seconds, the longest over the full visits' entries and leaves, from the disc's first
    frame in view (entry) or its first frame going out (leave) until b(t) stays within 10 % of
    the per-frame rule's change of b at that event from the per-frame rule's b(t)."""
    worst = 0.0
    slide, second = round(SLIDE * fps), round(fps)
    for frames, (_, _, how) in zip(visits, VISITS, strict=True):
        if how != "full":
            continue
        leaving = frames[-1] + 1 - slide
        change = abs(
            float(np.median(reference[frames[slide:-slide]]))
            - float(np.median(reference[frames[0] - second : frames[0]]))
        )
        for start, stop in ((frames[0], leaving), (leaving, frames[-1] + 1 + second)):
            off = np.flatnonzero(
                np.abs(brightness[start:stop] - reference[start:stop]) > 0.1 * change
            )
            worst = max(worst, (off[-1] + 1) / fps if off.size else 0.0)
    return worst


def plot(
    path: Path,
    fps: float,
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    visits: list[list[int]],
    title: str,
) -> None:
    """b(t) and C(t) of the fused image per rule (the first is the per-frame rule), visits
    shaded, and the t90 target (90 % of the per-frame rule's steady contrast) dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for label, (brightness, contrast) in curves.items():
        t = np.arange(len(brightness)) / fps
        top.plot(t, brightness, label=label, linewidth=1.2)
        bottom.plot(t, contrast, label=label, linewidth=1.2)
    for axis in (top, bottom):
        for frames, (_, _, how) in zip(visits, VISITS, strict=True):
            axis.axvspan(frames[0] / fps, frames[-1] / fps, color="0.88", zorder=0)
            if axis is top:
                axis.text(
                    frames[0] / fps + 0.05,
                    0.98,
                    f"hot disc ({how})",
                    va="top",
                    transform=axis.get_xaxis_transform(),
                    fontsize=8,
                    color="0.35",
                )
        axis.grid(alpha=0.3)
    reference = next(iter(curves.values()))[1]
    for number, frames in enumerate(visits):
        bottom.hlines(
            0.9 * float(np.median(reference[frames])),
            frames[0] / fps,
            frames[-1] / fps,
            colors="0.3",
            linestyles="dashed",
            linewidth=0.9,
            label="90 % of per-frame steady" if number == 0 else None,
        )
    bottom.legend(loc="lower right", fontsize=8)
    top.set_ylabel("static region mean (0-255)")
    bottom.set_ylabel("disc contrast (0-255)")
    bottom.set_xlabel("stream time (s)")
    top.legend(loc="lower left", fontsize=8)
    top.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def rule_label(time_constant: float) -> str:
    """The table's name for a time constant: 0 is the per-frame rule."""
    if time_constant == 0:
        return "tau 0 s (per-frame)"
    default = " (default)" if time_constant == DEFAULT_TIME_CONSTANT else ""
    return f"tau {time_constant:g} s{default}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip", default="0111_1716", help="M3SVD clip (default 0111_1716, 30 fps)")
    p.add_argument(
        "--time-constants",
        type=float,
        nargs="+",
        default=[0.2, 1.0],
        help=f"besides 0 and the default {DEFAULT_TIME_CONSTANT} s",
    )
    p.add_argument("--backend", default="auto", help="FusionEngine backend (default auto)")
    p.add_argument(
        "--inference-scale",
        type=float,
        default=0.5,
        help="the network's size against 320x240 (default 0.5: 160x120, 'detail' "
        "restore; full size is ~1.8 s a pair on this 2-core machine)",
    )
    p.add_argument(
        "--quick", action="store_true", help="classic_laplacian fusion, no network, no plot"
    )
    p.add_argument(
        "--plot", type=Path, help="the figure (default docs/thermal_flicker.png; none if --quick)"
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.quick:
        args.backend = "classic_laplacian"
    elif args.plot is None:
        args.plot = ROOT / "docs" / "thermal_flicker.png"
    fps, thermal, rgb, masks = stream(args.clip, args.seed)
    stamps = [round(i * 1e9 / fps) for i in range(len(thermal))]
    own = [frame_range(frame, PERCENTILES) for frame in thermal]
    touched = np.zeros(thermal[0].shape, bool)
    for mask in masks:
        if mask is not None:
            touched |= mask | ring(mask)
    static = ~touched
    visits = visit_frames(masks)
    # Frames in which nothing moved: the disc's mask is the previous frame's (both None too).
    still = np.array(
        [
            (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))
            for a, b in itertools.pairwise(masks)
        ]
    )
    taus = sorted({0.0, DEFAULT_TIME_CONSTANT, *args.time_constants})
    rules: dict[str, list[Range | None]] = {
        rule_label(tau): smoothed_ranges(list(zip(stamps, own, strict=True)), tau) for tau in taus
    }
    rules[f"snap, tau {DEFAULT_TIME_CONSTANT:g} s"] = snap_ranges(
        list(zip(stamps, own, strict=True)), DEFAULT_TIME_CONSTANT
    )
    per_frame, default = next(iter(rules)), next(r for r in rules if "default" in r)
    engine = FusionEngine(
        SHARED / "gifnet" / "weights" / "Final.model",
        "cpu",
        backend=args.backend,
        inference_scale=args.inference_scale if not args.quick else 1.0,
    )
    fused_rules = (per_frame, default)
    print(
        f"stream: clip {args.clip} frame 0 held, {SIZE[0]}x{SIZE[1]}, {fps:g} fps, "
        f"{len(thermal)} frames, static region {static.mean():.0%} of the frame; "
        f"fusion: {engine.describe()}, inference_scale {engine.inference_scale:g}"
    )
    print(f"CPU: {cpu_summary()}")
    measured: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    began = time.perf_counter()
    for label, ranges in rules.items():
        stretched = [
            np.zeros(frame.shape, np.uint8)
            if r is None
            else normalize_thermal(frame, "fixed", value_range=r)
            for frame, r in zip(thermal, ranges, strict=True)
        ]
        measured["thermal", label] = measure(stretched, masks, static)
        if label in fused_rules:
            fused = [engine.fuse_luminance(image, rgb)[0] for image in stretched]
            measured["fused", label] = measure(fused, masks, static)
    print(f"fusion and measures took {time.perf_counter() - began:.0f} s\n")
    header = (
        f"{'image':7} {'rule':24} {'rms dB':>7} {'x less':>7} {'mean|dB|':>8} "
        f"{'max|dB|':>7} {'still|dB|':>9} {'settle s':>8} {'min C':>5}  "
        "t90 s: full, edge (share), full"
    )
    print(header)
    for (image, label), (brightness, contrast) in measured.items():
        steps = np.diff(brightness)
        rms = float(np.sqrt(np.mean(steps**2)))
        base = float(np.sqrt(np.mean(np.diff(measured[image, per_frame][0]) ** 2)))
        times, lowest = t90(contrast, measured[image, per_frame][1], visits, fps)
        settled = settle(brightness, measured[image, per_frame][0], visits, fps)
        print(
            f"{image:7} {label:24} {rms:7.3f} {base / rms:7.1f} {np.abs(steps).mean():8.3f} "
            f"{np.abs(steps).max():7.2f} {np.abs(steps[still]).mean():9.3f} {settled:8.2f} "
            f"{lowest:5.0%}  "
            f"{', '.join(times)}"
        )
    if args.plot is not None:
        height, width = engine.inference_size(SIZE[1], SIZE[0])
        fusion = (
            engine.backend
            if engine.backend.startswith("classic")
            else f"GIFNet on {engine.backend} at {width}x{height}, restored to {SIZE[0]}x{SIZE[1]}"
        )
        plot(
            args.plot,
            fps,
            {label: measured["fused", label] for label in fused_rules},
            visits,
            f"Fused luminance ({fusion}): M3SVD {args.clip} held at {fps:g} fps as 16-bit\n"
            "counts with drift and noise, a hot disc coming in and out (per-frame rule vs default)",
        )
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
