"""Classical image fusion without learned weights: a fallback and a baseline for GIFNet.

A robot without the checkpoint still gets a fused image, and users can see
and measure what the network adds over rules that have been used for
decades. Four rules fuse two grey luminance images (float, 0-255):

- ``average``: ``(A + B) / 2``.
- ``max``: the per-pixel maximum.
- ``laplacian``: Laplacian-pyramid fusion (Burt & Adelson's pyramid): each
  detail level takes, per pixel, the coefficient of larger magnitude
  ("max-abs"); the coarsest (base) level is the average; the fused pyramid is
  collapsed again. A pyramid of an image collapses back to that image, so
  fusing A with A returns A.
- ``gff``: guided-filtering fusion (Li, Kang & Hu, IEEE TIP 2013), written
  from the paper: a two-scale split (31×31 mean filter base, the rest detail),
  saliency = Gaussian-smoothed (11×11, σ = 5) magnitude of the 3×3 Laplacian,
  binary weight maps from the most salient source (ties go to the first),
  refined by a guided filter with each source as guide (r = 45, ε = 0.3 for
  the base, r = 7, ε = 1e-6 for the detail, on intensities scaled to 0-1),
  normalised to sum to one per pixel. Negative refined weights are set to 0
  before the normalisation (the paper leaves them unspecified) so the result
  stays a convex mix of the sources; where both are 0 the mix is even.

``FusionEngine(backend="classic_<rule>")`` puts a rule where the network
would run, so modes, thermal normalisation, the YCbCr split and the chroma
source of each mode are the engine's own and the two can never disagree about
colour. This module needs only numpy and OpenCV: no weights, no torch, no ROS.
"""

from __future__ import annotations

import cv2
import numpy as np

METHODS = ("average", "max", "laplacian", "gff")


def fuse_average(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel mean."""
    return (a + b) / 2.0


def fuse_max(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel maximum: keeps whichever source is brighter (hot objects in thermal)."""
    return np.maximum(a, b)


def _pyramid_depth(shape: tuple[int, ...], levels: int) -> int:
    """Detail levels to use: at most `levels`, stopping before a level would be under 8 px."""
    depth, side = 0, min(shape[:2])
    while depth < levels and side // 2 >= 8:
        side = (side + 1) // 2
        depth += 1
    return depth


def _laplacian_pyramid(image: np.ndarray, depth: int) -> list[np.ndarray]:
    """Detail levels (finest first) followed by the Gaussian base."""
    pyramid, current = [], image
    for _ in range(depth):
        smaller = cv2.pyrDown(current)
        expanded = cv2.pyrUp(smaller, dstsize=(current.shape[1], current.shape[0]))
        pyramid.append(current - expanded)
        current = smaller
    pyramid.append(current)
    return pyramid


def fuse_laplacian(a: np.ndarray, b: np.ndarray, levels: int = 5) -> np.ndarray:
    """Laplacian-pyramid fusion: max-abs on the detail levels, average on the base."""
    depth = _pyramid_depth(a.shape, levels)
    pa = _laplacian_pyramid(a.astype(np.float32), depth)
    pb = _laplacian_pyramid(b.astype(np.float32), depth)
    fused = (pa[-1] + pb[-1]) / 2.0
    for da, db in zip(reversed(pa[:-1]), reversed(pb[:-1]), strict=True):
        detail = np.where(np.abs(da) >= np.abs(db), da, db)
        fused = cv2.pyrUp(fused, dstsize=(detail.shape[1], detail.shape[0])) + detail
    return fused


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter: the local linear model q = a·I + b fitted in (2r+1)² boxes."""
    size = (2 * radius + 1, 2 * radius + 1)

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, cv2.CV_64F, size, borderType=cv2.BORDER_REFLECT)

    mean_i, mean_p = box(guide), box(source)
    var_i = box(guide * guide) - mean_i * mean_i
    cov_ip = box(guide * source) - mean_i * mean_p
    slope = cov_ip / (var_i + eps)
    offset = mean_p - slope * mean_i
    return box(slope) * guide + box(offset)


def fuse_gff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Guided-filtering fusion (Li et al. 2013); parameters in the module docstring."""
    sources = [a.astype(np.float64) / 255.0, b.astype(np.float64) / 255.0]
    bases = [cv2.blur(s, (31, 31), borderType=cv2.BORDER_REFLECT) for s in sources]
    details = [s - base for s, base in zip(sources, bases, strict=True)]
    saliency = [
        cv2.GaussianBlur(np.abs(cv2.Laplacian(s, cv2.CV_64F, ksize=1)), (11, 11), 5.0)
        for s in sources
    ]
    first_wins = saliency[0] >= saliency[1]
    masks = [first_wins.astype(np.float64), (~first_wins).astype(np.float64)]

    def weights(radius: int, eps: float) -> list[np.ndarray]:
        refined = [
            np.maximum(guided_filter(s, m, radius, eps), 0.0)
            for s, m in zip(sources, masks, strict=True)
        ]
        total = refined[0] + refined[1]
        safe = np.where(total > 0, total, 1.0)
        return [np.where(total > 0, w / safe, 0.5) for w in refined]

    wb, wd = weights(45, 0.3), weights(7, 1e-6)
    fused = wb[0] * bases[0] + wb[1] * bases[1] + wd[0] * details[0] + wd[1] * details[1]
    return fused * 255.0


_RULES = {
    "average": fuse_average,
    "max": fuse_max,
    "laplacian": fuse_laplacian,
    "gff": fuse_gff,
}


def fuse_grey(method: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Fuse two grey float images on 0-255 with `method`; float32 result clipped to 0-255."""
    if method not in _RULES:
        raise ValueError(f"unknown classic fusion method {method!r} (expected one of {METHODS})")
    if a.shape != b.shape:
        raise ValueError(
            f"image sizes differ: {a.shape[1]}x{a.shape[0]} and {b.shape[1]}x{b.shape[0]}"
        )
    fused = _RULES[method](a.astype(np.float32), b.astype(np.float32))
    return np.clip(fused, 0.0, 255.0).astype(np.float32)
