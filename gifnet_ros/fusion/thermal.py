"""Bring a radiometric thermal image (16-bit counts, or kelvin / degrees as float) to 8 bits.

GIFNet was trained on 8-bit infrared images, so a 16-bit or float thermal
frame must be mapped to 0-255 first. Raw radiometric counts occupy a narrow,
scene-dependent band of the 16-bit range, so a fixed full-range scaling gives
an almost flat image; the default is therefore a robust percentile stretch,
which ignores a few hot or dead pixels.

Rules (``rule`` argument):

- ``percentile`` (default): ``lo, hi`` = the ``low_high`` percentiles (default
  1 and 99) of the finite pixels (:func:`frame_range`);
  ``out = clip((x - lo) / (hi - lo), 0, 1) · 255``, rounded. A frame with
  ``hi <= lo`` (flat) becomes all zeros.
- ``fixed``: the same with ``lo, hi = value_range`` (e.g. a known radiometric
  span such as 7000-9000 counts, or 250-330 K), stable from frame to frame.
- ``none``: no stretch: 16-bit is scaled by 255/65535 (the full range),
  float is taken as already being on 0-255.

NaN and infinite pixels (dead pixels of 32FC1 cameras) become 0. An 8-bit
input is returned unchanged whatever the rule: it is already what the
network expects (the camera did its own gain control), and nothing below
applies to it.

Stable in time (:class:`RangeFilter`). A percentile range taken from each
frame on its own re-scales every frame: when a hot object enters or leaves
the view the 99th percentile jumps, and the whole fused image pumps in
brightness (the flicker of per-frame AGC drivers); sensor noise moves the
percentiles too. So a stream (the node, the bag tools) stretches each frame
with the percentile range smoothed over time: lo and hi follow the frames'
own ranges exponentially with a time constant in seconds, from the stamps
(``DEFAULT_TIME_CONSTANT``; 0 = each frame's own range, the per-frame rule).
It still follows a real change of scene within about a second
(benchmarks/thermal_flicker.py measures both). :func:`smoothed_ranges`
applies the same rule to a recorded stream in stamp order, so a bag gives
the same images on every run, whatever order its messages are read in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

RULES = ("percentile", "fixed", "none")

# Seconds; chosen by benchmarks/thermal_flicker.py (30 fps, a hot object entering and leaving a
# static scene): the rms frame-to-frame change of the static scene's brightness falls 5.1x in the
# stretched thermal image and 5.4x in the fused one against the per-frame rule (0.4 s: 4.5x in
# the thermal image), the object's contrast stays at 90 % of the per-frame rule's from its entry,
# and the brightness settles within 10 % in about 1.3 s. Longer is steadier but slower (1 s:
# 8.1x, 2.2 s).
DEFAULT_TIME_CONSTANT = 0.5

# A stamp gap this many time constants long restarts the filter from the frame's own range:
# the old range would weigh exp(-5) < 1 % anyway, and a gap that long is a camera that dropped
# out or a paused bag, whose scene may be another.
RESTART_GAP = 5.0

Range = tuple[float, float]


def frame_range(image: np.ndarray, low_high: tuple[float, float]) -> Range | None:
    """The ``low_high`` percentiles (lo, hi) of the image's finite pixels: the percentile
    rule's stretch range for this frame alone; None when there is no finite pixel or
    ``hi <= lo`` (a flat frame has no range to stretch)."""
    p_lo, p_hi = (float(v) for v in low_high)
    if not 0.0 <= p_lo < p_hi <= 100.0:
        raise ValueError(
            f"thermal percentiles [{p_lo}, {p_hi}] must satisfy 0 <= low < high <= 100"
        )
    values = image.astype(np.float32, copy=False)
    finite = np.isfinite(values)
    sample = values if finite.all() else values[finite]
    if sample.size == 0:
        return None
    lo, hi = (float(v) for v in np.percentile(sample, (p_lo, p_hi)))
    return (lo, hi) if hi > lo else None


class RangeFilter:
    """The stretch range of a thermal stream, smoothed over time so that it does not flicker.

    ``update`` takes each frame's own range (:func:`frame_range`) with its stamp and returns
    the range to stretch that frame with (``normalize_thermal(image, "fixed",
    value_range=...)``): ``s += w · (frame - s)`` for lo and hi, with
    ``w = 1 - exp(-dt / time_constant)`` from the stamp gap dt, so the weight of a frame
    depends on the time it covers, not on the frame rate. The first frame, a stamp that goes
    back (a looped bag, a reset clock) and a gap over ``RESTART_GAP`` time constants start
    over from the frame's own range. A flat frame (None) leaves the state as it is and is
    stretched with it. ``time_constant`` 0 returns each frame's own range: the per-frame rule.

    A frame whose range lies far outside the smoothed one does not snap to it: a hot object
    entering the view is such a frame, and snapping would bring the per-frame rule's jump
    back (benchmarks/README.md, "Flicker of 16-bit thermal": with snapping the flicker falls
    1.4x instead of 5x), while the smoothed range follows a real change of scene within about
    a second anyway.
    """

    def __init__(self, time_constant: float) -> None:
        if not (math.isfinite(time_constant) and time_constant >= 0.0):
            raise ValueError(
                f"thermal time constant must be a finite number of seconds >= 0, "
                f"got {time_constant}"
            )
        self.time_constant = float(time_constant)
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next frame starts over from its own range."""
        self._range: Range | None = None
        self._stamp_ns = 0

    def update(self, stamp_ns: int, frame: Range | None) -> Range | None:
        """The range to stretch the frame stamped ``stamp_ns`` with, given its own range."""
        if self.time_constant == 0.0:
            return frame
        if frame is None:
            return self._range
        dt = (stamp_ns - self._stamp_ns) * 1e-9
        if self._range is None or dt < 0.0 or dt > RESTART_GAP * self.time_constant:
            self._range = (float(frame[0]), float(frame[1]))
        else:
            weight = -math.expm1(-dt / self.time_constant)
            lo, hi = self._range
            self._range = (lo + weight * (frame[0] - lo), hi + weight * (frame[1] - hi))
        self._stamp_ns = stamp_ns
        return self._range


def smoothed_ranges(
    frames: Sequence[tuple[int, Range | None]], time_constant: float
) -> list[Range | None]:
    """RangeFilter over a recorded stream: ``frames`` are (stamp_ns, frame range) in any order;
    the result is in the same order, each the range to stretch that frame with, filtered in
    stamp order (equal stamps in their given order). A bag's messages can come in another
    order than their stamps (several topics, a merged recording); sorting first gives the same
    images on every run and the ones a live node would have published."""
    smoother = RangeFilter(time_constant)
    out: list[Range | None] = [None] * len(frames)
    for index in sorted(range(len(frames)), key=lambda i: frames[i][0]):
        stamp_ns, frame = frames[index]
        out[index] = smoother.update(stamp_ns, frame)
    return out


def normalize_thermal(
    image: np.ndarray,
    rule: str = "percentile",
    low_high: tuple[float, float] = (1.0, 99.0),
    value_range: tuple[float, float] = (0.0, 65535.0),
) -> np.ndarray:
    """Map a grey thermal image (uint8, uint16 or float) to uint8 by the module's rules."""
    if image.dtype == np.uint8:
        return image
    if image.ndim != 2:
        raise ValueError(f"thermal normalisation takes a grey H×W image, got shape {image.shape}")
    if image.dtype not in (np.uint16, np.float32, np.float64):
        raise ValueError(f"thermal image dtype {image.dtype} is not uint8, uint16 or float")
    if rule not in RULES:
        raise ValueError(f"unknown thermal normalisation {rule!r} (expected one of {RULES})")
    values = image.astype(np.float32)
    if rule == "none":
        lo, hi = (0.0, 65535.0) if image.dtype == np.uint16 else (0.0, 255.0)
    elif rule == "fixed":
        lo, hi = (float(v) for v in value_range)
        if not hi > lo:
            raise ValueError(f"thermal range [{lo}, {hi}] is empty: max must exceed min")
    else:
        own = frame_range(values, low_high)
        if own is None:
            return np.zeros(image.shape, np.uint8)
        lo, hi = own
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite pixels are zeroed below
        scaled = (values - lo) * (255.0 / (hi - lo))
    scaled[~np.isfinite(values)] = 0.0
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)
