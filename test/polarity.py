"""Whether a fused image keeps the sign of its sources' contrast, window by window.

A fused image that turns a white car black contradicts both cameras there, yet metrics that
reward contrast whatever its sign (SD, SF, AG) do not see it. The check here: in every 16×16
window (stride 8) where the locally brighter source (the higher window mean) has texture
(standard deviation at least 4 grey levels), the Pearson correlation of the fused image with
that source should be positive. ``positive_share`` is the share of such windows where it is.
Test-only: the product's metrics are those of gifnet_ros.fusion.metrics.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

WINDOW, STRIDE, MIN_STD = 16, 8, 4.0


def _windows(image: np.ndarray) -> np.ndarray:
    view = sliding_window_view(image.astype(np.float64), (WINDOW, WINDOW))[::STRIDE, ::STRIDE]
    return view.reshape(-1, WINDOW * WINDOW)


def positive_share(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Share of textured windows in which ``fused`` correlates positively with the brighter
    of ``a`` and ``b`` (grey images of one size, any scale)."""
    f, wa, wb = _windows(fused), _windows(a), _windows(b)
    bright = np.where((wa.mean(1) >= wb.mean(1))[:, None], wa, wb)
    fc = f - f.mean(1, keepdims=True)
    bc = bright - bright.mean(1, keepdims=True)
    textured = bc.std(1) >= MIN_STD
    if not textured.any():
        raise ValueError("no textured window in the brighter source")
    covariance = (fc * bc).mean(1)[textured]
    return float(np.mean(covariance > 0))
