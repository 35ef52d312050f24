"""Bring a radiometric thermal image (16-bit counts, or kelvin / degrees as float) to 8 bits.

GIFNet was trained on 8-bit infrared images, so a 16-bit or float thermal
frame must be mapped to 0-255 first. Raw radiometric counts occupy a narrow,
scene-dependent band of the 16-bit range, so a fixed full-range scaling gives
an almost flat image; the default is therefore a robust per-frame percentile
stretch, which ignores a few hot or dead pixels.

Rules (``rule`` argument):

- ``percentile`` (default): ``lo, hi`` = the ``low_high`` percentiles (default
  1 and 99) of the finite pixels; ``out = clip((x - lo) / (hi - lo), 0, 1) · 255``,
  rounded. A frame with ``hi <= lo`` (flat) becomes all zeros.
- ``fixed``: the same with ``lo, hi = value_range`` (e.g. a known radiometric
  span such as 7000-9000 counts, or 250-330 K), stable from frame to frame.
- ``none``: no stretch: 16-bit is scaled by 255/65535 (the full range),
  float is taken as already being on 0-255.

NaN and infinite pixels (dead pixels of 32FC1 cameras) become 0. An 8-bit
input is returned unchanged whatever the rule: it is already what the
network expects.
"""

from __future__ import annotations

import numpy as np

RULES = ("percentile", "fixed", "none")


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
    finite = np.isfinite(values)
    if rule == "none":
        lo, hi = (0.0, 65535.0) if image.dtype == np.uint16 else (0.0, 255.0)
    elif rule == "fixed":
        lo, hi = (float(v) for v in value_range)
        if not hi > lo:
            raise ValueError(f"thermal range [{lo}, {hi}] is empty: max must exceed min")
    else:
        p_lo, p_hi = (float(v) for v in low_high)
        if not 0.0 <= p_lo < p_hi <= 100.0:
            raise ValueError(
                f"thermal percentiles [{p_lo}, {p_hi}] must satisfy 0 <= low < high <= 100"
            )
        sample = values[finite] if not finite.all() else values
        if sample.size == 0:
            return np.zeros(image.shape, np.uint8)
        lo, hi = (float(v) for v in np.percentile(sample, (p_lo, p_hi)))
        if not hi > lo:
            return np.zeros(image.shape, np.uint8)
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite pixels are zeroed below
        scaled = (values - lo) * (255.0 / (hi - lo))
    scaled[~finite] = 0.0
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)
