"""Objective fusion-quality metrics for a fused grey image F and its two grey sources A and B.

Users compare fusion methods by looking at them and by the metrics the
infrared/visible fusion literature reports, so these follow the definitions
used there (and by the usual Python/MATLAB evaluation scripts of fusion
papers), not the general image-quality variants. numpy and OpenCV only: SciPy
is not a dependency of the package.

Images are H×W arrays on the 0-255 scale (uint8 or float). A colour (H×W×3
RGB) image is reduced to its luminance Y = 0.299 R + 0.587 G + 0.114 B
(ITU-R BT.601, the first row of the engine's YCbCr transform) by
:func:`luminance`; every metric is computed on luminance. The histogram-based
metrics (EN, MI) first round to the nearest integer and clip to 0-255
(256 bins of width 1).

Definitions (log base 2 throughout, so EN and MI are in bits):

- **EN**, entropy of F: ``-Σ p(k) log2 p(k)`` over the 256-bin grey-level
  histogram (Shannon; empty bins contribute 0).
- **SD**, standard deviation of F: population standard deviation
  ``sqrt(mean((F - mean F)²))``.
- **SF**, spatial frequency (Eskicioglu & Fisher 1995): ``sqrt(RF² + CF²)``
  with ``RF = sqrt(mean((F[i, j] - F[i, j-1])²))`` over horizontally adjacent
  pixels and ``CF`` the same over vertically adjacent pixels (the mean runs
  over the available differences, as the common evaluation scripts do).
- **AG**, average gradient: the mean over the (H-1)×(W-1) grid of
  ``sqrt((ΔxF² + ΔyF²) / 2)`` with forward differences
  ``ΔxF = F[i, j+1] - F[i, j]``, ``ΔyF = F[i+1, j] - F[i, j]``.
- **MI**, mutual information (Qu et al. 2002): ``MI(A, F) + MI(B, F)``, the
  **sum** over both sources, each ``Σ p(a, f) log2(p(a, f) / (p(a) p(f)))``
  from the 256×256 joint histogram; in bits.
- **SCD**, sum of the correlations of differences (Aslantas & Bendes 2015):
  ``r(F - B, A) + r(F - A, B)`` with ``r`` the Pearson correlation
  coefficient. A correlation with a constant image is taken as 0 (nothing
  can be measured), so SCD is always a finite number in [-2, 2].
- **VIF**: the pixel-domain, four-scale visual information fidelity of
  Sheikh & Bovik (2006) ("VIFp": Gaussian windows of size 2^(5-s)+1 and
  standard deviation size/5 at scale s = 1..4, 'valid' filtering, dyadic
  down-sampling, HVS noise variance 2, log base irrelevant as it cancels),
  computed with each source as the reference and F as the distorted image
  and **summed**: ``VIF = VIF(A, F) + VIF(B, F)``. This is what the common
  infrared/visible benchmark scripts report as "VIF"; it is *not* the VIFF
  fusion metric of Han et al. (2013). ``VIF(A, A) = 1``, so a perfect copy of
  both sources would score 2.
- **Qabf** (Xydeas & Petrović 2000): edge-information preservation from
  3×3 Sobel gradients, with the published sigmoid constants
  (Γg = 0.9994, κg = -15, σg = 0.5; Γα = 0.9879, κα = -22, σα = 0.8) and
  weights ``w = g^L``, L = 1. Orientations are edge directions, so their
  difference is taken modulo π (0 to π/2). Because of the constants the best
  possible value, reached when F reproduces a source's gradients exactly, is
  ``Qg(1)·Qα(1) ≈ 0.9748``, not 1. Range [0, 0.9748].
- **SSIM** (Wang et al. 2004): 11×11 Gaussian window with σ = 1.5,
  K1 = 0.01, K2 = 0.03, dynamic range 255, mean of the SSIM map over the
  pixels whose window lies inside the image; reported as the **sum**
  ``SSIM(A, F) + SSIM(B, F)`` as in the common fusion benchmarks (so its
  range is [-2, 2]; halve it for the average).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

METRICS = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM")

_LUMA = np.array([0.299, 0.587, 0.114])


def luminance(image: np.ndarray) -> np.ndarray:
    """A grey H×W float64 image on 0-255: the image itself, or the BT.601 luminance of RGB."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return image.astype(np.float64)
    if image.ndim == 3 and image.shape[2] == 3:
        return image.astype(np.float64) @ _LUMA
    raise ValueError(f"image of shape {image.shape}: expected grey H×W or RGB H×W×3")


def _levels(image: np.ndarray) -> np.ndarray:
    """Integer grey levels 0-255 for the histogram metrics."""
    return np.clip(np.rint(image), 0, 255).astype(np.int64)


def entropy(fused: np.ndarray) -> float:
    """EN: Shannon entropy of the 256-bin grey-level histogram, in bits."""
    counts = np.bincount(_levels(luminance(fused)).ravel(), minlength=256)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def standard_deviation(fused: np.ndarray) -> float:
    """SD: population standard deviation of the grey levels."""
    return float(luminance(fused).std())


def spatial_frequency(fused: np.ndarray) -> float:
    """SF: sqrt(RF² + CF²) from horizontal and vertical neighbour differences."""
    f = luminance(fused)
    rf2 = np.mean(np.diff(f, axis=1) ** 2)
    cf2 = np.mean(np.diff(f, axis=0) ** 2)
    return float(math.sqrt(rf2 + cf2))


def average_gradient(fused: np.ndarray) -> float:
    """AG: mean of sqrt((Δx² + Δy²)/2) over the (H-1)×(W-1) forward-difference grid."""
    f = luminance(fused)
    dx = f[:-1, 1:] - f[:-1, :-1]
    dy = f[1:, :-1] - f[:-1, :-1]
    return float(np.mean(np.sqrt((dx**2 + dy**2) / 2.0)))


def mutual_information_pair(source: np.ndarray, fused: np.ndarray) -> float:
    """MI(source, fused) in bits from the 256×256 joint grey-level histogram."""
    a, f = _levels(luminance(source)), _levels(luminance(fused))
    _check_sizes(a, f)
    joint = np.bincount((a * 256 + f).ravel(), minlength=256 * 256).reshape(256, 256)
    p = joint / joint.sum()
    pa, pf = p.sum(axis=1), p.sum(axis=0)
    nz = p > 0
    return float((p[nz] * np.log2(p[nz] / np.outer(pa, pf)[nz])).sum())


def mutual_information(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """MI: MI(A, F) + MI(B, F), in bits."""
    return mutual_information_pair(a, fused) + mutual_information_pair(b, fused)


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float((x * y).sum()) / denominator if denominator > 0 else 0.0


def scd(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """SCD: r(F - B, A) + r(F - A, B), Pearson correlations (0 for a constant image)."""
    f, a, b = luminance(fused), luminance(a), luminance(b)
    _check_sizes(a, f, b)
    return _correlation(f - b, a) + _correlation(f - a, b)


def _gaussian_window(size: int, sigma: float) -> np.ndarray:
    g = cv2.getGaussianKernel(size, sigma, cv2.CV_64F)
    return g @ g.T


def _filter_valid(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Correlation with `window` keeping only outputs whose window lies inside the image."""
    r = window.shape[0] // 2
    out = cv2.filter2D(image, cv2.CV_64F, window, borderType=cv2.BORDER_REFLECT)
    return out[r : image.shape[0] - r, r : image.shape[1] - r]


def vif_pair(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Pixel-domain four-scale VIF (Sheikh & Bovik 2006) of `distorted` against `reference`.

    Needs at least 41×41 pixels (the coarsest scale must keep one window). A
    flat reference carries no information, which makes VIF undefined: NaN.
    """
    ref, dist = luminance(reference), luminance(distorted)
    _check_sizes(ref, dist)
    if min(ref.shape) < 41:
        raise ValueError(f"VIF needs images of at least 41x41 pixels, got {ref.shape[1]}x"
                         f"{ref.shape[0]}")
    sigma_nsq, eps = 2.0, 1e-10
    numerator = denominator = 0.0
    for scale in range(1, 5):
        size = 2 ** (4 - scale + 1) + 1
        window = _gaussian_window(size, size / 5.0)
        if scale > 1:
            ref = _filter_valid(ref, window)[::2, ::2]
            dist = _filter_valid(dist, window)[::2, ::2]
        mu1, mu2 = _filter_valid(ref, window), _filter_valid(dist, window)
        sigma1_sq = np.maximum(_filter_valid(ref * ref, window) - mu1 * mu1, 0.0)
        sigma2_sq = np.maximum(_filter_valid(dist * dist, window) - mu2 * mu2, 0.0)
        sigma12 = _filter_valid(ref * dist, window) - mu1 * mu2
        g = sigma12 / (sigma1_sq + eps)
        sv_sq = sigma2_sq - g * sigma12
        flat_ref = sigma1_sq < eps
        g[flat_ref] = 0.0
        sv_sq[flat_ref] = sigma2_sq[flat_ref]
        sigma1_sq[flat_ref] = 0.0
        flat_dist = sigma2_sq < eps
        g[flat_dist] = 0.0
        sv_sq[flat_dist] = 0.0
        negative = g < 0
        sv_sq[negative] = sigma2_sq[negative]
        g[negative] = 0.0
        sv_sq = np.maximum(sv_sq, eps)
        numerator += float(np.log10(1.0 + g * g * sigma1_sq / (sv_sq + sigma_nsq)).sum())
        denominator += float(np.log10(1.0 + sigma1_sq / sigma_nsq).sum())
    return numerator / denominator if denominator > 0 else float("nan")


def vif(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """VIF: VIF(A, F) + VIF(B, F), pixel-domain Sheikh & Bovik VIF summed over the sources."""
    return vif_pair(a, fused) + vif_pair(b, fused)


# Xydeas & Petrović (2000) sigmoid constants.
_GAMMA_G, _KAPPA_G, _SIGMA_G = 0.9994, -15.0, 0.5
_GAMMA_A, _KAPPA_A, _SIGMA_A = 0.9879, -22.0, 0.8


def _sobel(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient strength and edge orientation in (-π/2, π/2] from 3×3 Sobel operators."""
    gx = cv2.Sobel(image, cv2.CV_64F, 1, 0, ksize=3, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.Sobel(image, cv2.CV_64F, 0, 1, ksize=3, borderType=cv2.BORDER_REPLICATE)
    strength = np.hypot(gx, gy)
    orientation = np.arctan(gy / np.where(gx == 0, 1.0, gx))
    orientation[gx == 0] = math.pi / 2
    return strength, orientation


def _edge_preservation(source: tuple[np.ndarray, np.ndarray],
                       fused: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    (g_s, a_s), (g_f, a_f) = source, fused
    larger = np.maximum(g_s, g_f)
    strength = np.where(larger > 0, np.minimum(g_s, g_f) / np.where(larger > 0, larger, 1.0), 1.0)
    difference = np.abs(a_s - a_f)
    difference = np.minimum(difference, math.pi - difference)
    orientation = 1.0 - difference / (math.pi / 2)
    q_g = _GAMMA_G / (1.0 + np.exp(_KAPPA_G * (strength - _SIGMA_G)))
    q_a = _GAMMA_A / (1.0 + np.exp(_KAPPA_A * (orientation - _SIGMA_A)))
    return q_g * q_a


def qabf(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Qabf: gradient-weighted edge preservation from both sources (0 when both are flat)."""
    f, a, b = luminance(fused), luminance(a), luminance(b)
    _check_sizes(a, f, b)
    ga, gb, gf = _sobel(a), _sobel(b), _sobel(f)
    weight_a, weight_b = ga[0], gb[0]
    total = float((weight_a + weight_b).sum())
    if total == 0:
        return 0.0
    kept = _edge_preservation(ga, gf) * weight_a + _edge_preservation(gb, gf) * weight_b
    return float(kept.sum()) / total


def ssim_pair(x: np.ndarray, y: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004) with an 11×11 σ = 1.5 Gaussian window, over valid pixels."""
    x, y = luminance(x), luminance(y)
    _check_sizes(x, y)
    if min(x.shape) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {x.shape[1]}x"
                         f"{x.shape[0]}")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    window = _gaussian_window(11, 1.5)
    mx, my = _filter_valid(x, window), _filter_valid(y, window)
    vx = _filter_valid(x * x, window) - mx * mx
    vy = _filter_valid(y * y, window) - my * my
    cxy = _filter_valid(x * y, window) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(ssim_map.mean())


def ssim_sum(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """SSIM as fusion papers report it: SSIM(A, F) + SSIM(B, F), in [-2, 2]."""
    return ssim_pair(a, fused) + ssim_pair(b, fused)


def _check_sizes(*images: np.ndarray) -> None:
    shapes = {image.shape[:2] for image in images}
    if len(shapes) > 1:
        sizes = ", ".join(f"{s[1]}x{s[0]}" for s in sorted(shapes))
        raise ValueError(f"images to compare have different sizes: {sizes}")


def evaluate(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """All metrics of :data:`METRICS` for fused image F and sources A, B (colour → luminance)."""
    f, a, b = luminance(fused), luminance(a), luminance(b)
    _check_sizes(f, a, b)
    return {
        "EN": entropy(f),
        "SD": standard_deviation(f),
        "SF": spatial_frequency(f),
        "AG": average_gradient(f),
        "MI": mutual_information(f, a, b),
        "SCD": scd(f, a, b),
        "VIF": vif(f, a, b),
        "Qabf": qabf(f, a, b),
        "SSIM": ssim_sum(f, a, b),
    }
