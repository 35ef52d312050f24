"""Fusion metrics against hand computations, scikit-image and known properties."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from gifnet_ros.fusion import metrics


def scene(seed: int, size: tuple[int, int] = (64, 72)) -> np.ndarray:
    """A deterministic uint8 test picture: a ramp, a few rectangles and mild noise."""
    rng = np.random.default_rng(seed)
    h, w = size
    image = np.add.outer(np.linspace(20, 120, h), np.linspace(0, 60, w))
    for _ in range(5):
        y, x = rng.integers(0, h - 10), rng.integers(0, w - 10)
        image[y : y + rng.integers(5, 20), x : x + rng.integers(5, 20)] += rng.uniform(-60, 90)
    image += rng.normal(0, 4, size)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


# -- EN, SD, SF, AG: hand-computed values ----------------------------------------------------


def test_entropy_of_known_histograms() -> None:
    # Half the pixels 0, a quarter 1, a quarter 2: -(1/2 log2 1/2 + 2 * 1/4 log2 1/4) = 1.5 bits.
    image = np.array([[0, 0, 1, 2], [0, 0, 2, 1]], np.uint8)
    assert metrics.entropy(image) == pytest.approx(1.5)
    assert metrics.entropy(np.arange(256, dtype=np.uint8).reshape(16, 16)) == pytest.approx(8.0)
    assert metrics.entropy(np.full((5, 5), 77, np.uint8)) == 0.0


def test_standard_deviation_by_hand() -> None:
    # mean 3, squared deviations 9, 1, 1, 9 → variance 5 (population).
    assert metrics.standard_deviation(np.array([[0, 2], [4, 6]])) == pytest.approx(math.sqrt(5))


def test_spatial_frequency_by_hand() -> None:
    # Horizontal neighbour differences 1, 1 (RF = 1); vertical ones 2, 2 (CF = 2).
    assert metrics.spatial_frequency(np.array([[0, 1], [2, 3]])) == pytest.approx(math.sqrt(5))
    # 3×3: horizontal differences 1,1 / 2,2 / 3,3 → RF² = 28/6; vertical 0,1,2 / 3,4,5 → CF² = 55/6.
    image = np.array([[0, 1, 2], [0, 2, 4], [3, 6, 9]])
    assert metrics.spatial_frequency(image) == pytest.approx(math.sqrt(28 / 6 + 55 / 6))


def test_average_gradient_by_hand() -> None:
    # One grid cell: Δx = 1, Δy = 2 → sqrt((1 + 4) / 2).
    assert metrics.average_gradient(np.array([[0, 1], [2, 3]])) == pytest.approx(math.sqrt(2.5))
    # 2×3: cells (0,0): Δx 4, Δy 0 → sqrt(8); (0,1): Δx 0, Δy 3 → sqrt(4.5).
    image = np.array([[0, 4, 4], [0, 7, 4]])
    assert metrics.average_gradient(image) == pytest.approx((math.sqrt(8) + math.sqrt(4.5)) / 2)


def test_colour_is_measured_on_bt601_luminance() -> None:
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 100, 200, 50
    assert metrics.luminance(rgb)[0, 0] == pytest.approx(0.299 * 100 + 0.587 * 200 + 0.114 * 50)
    grey = scene(3)
    assert metrics.spatial_frequency(np.repeat(grey[:, :, None], 3, 2)) == pytest.approx(
        metrics.spatial_frequency(grey)
    )


# -- MI ------------------------------------------------------------------------------------


def test_mutual_information_of_identical_images_is_their_entropy() -> None:
    # Four levels, equally frequent: H = 2 bits, and MI(A, A) = H(A).
    a = np.tile(np.array([10, 60, 110, 250], np.uint8), (8, 4))
    assert metrics.mutual_information_pair(a, a) == pytest.approx(2.0)


def test_mutual_information_of_independent_images_is_zero() -> None:
    # A varies only down the rows and B only along the columns, with every (a, b)
    # combination exactly once: the joint histogram is the product of the marginals.
    a = np.repeat(np.array([0, 50, 100, 200], np.uint8)[:, None], 3, axis=1)
    b = np.repeat(np.array([7, 9, 240], np.uint8)[None, :], 4, axis=0)
    assert metrics.mutual_information_pair(a, b) == pytest.approx(0.0, abs=1e-12)
    # The fusion MI sums over both sources: F = A gives H(A) + MI(B, A) = 2 + 0 bits.
    assert metrics.mutual_information(a, a, b) == pytest.approx(2.0)


# -- SCD -----------------------------------------------------------------------------------


def test_scd_of_the_sum_of_the_sources_is_two() -> None:
    # F = A + B: F - B = A and F - A = B, each perfectly correlated with its source.
    a, b = scene(1).astype(float), scene(2).astype(float)
    assert metrics.scd(a + b, a, b) == pytest.approx(2.0)


def test_scd_counts_a_constant_difference_as_uncorrelated() -> None:
    # F = A = B: both differences are constant (zero), so both correlations count as 0.
    a = scene(4)
    assert metrics.scd(a, a, a) == 0.0
    # F = A: r(A - B, A) + r(0, B) = r(A - B, A), checked against numpy's corrcoef.
    b = scene(5)
    value = metrics.scd(a, a, b)
    expected = np.corrcoef((a.astype(float) - b).ravel(), a.astype(float).ravel())[0, 1]
    assert value == pytest.approx(expected)


# -- VIF -----------------------------------------------------------------------------------


def test_vif_of_an_image_with_itself_is_one() -> None:
    a = scene(6)
    assert metrics.vif_pair(a, a) == pytest.approx(1.0, abs=1e-6)
    # Summed over two sources: F = A = B scores 2.
    assert metrics.vif(a, a, a) == pytest.approx(2.0, abs=1e-6)


def test_vif_falls_with_blur_and_noise_and_exceeds_one_for_contrast_gain() -> None:
    a = scene(7).astype(np.float64)
    blurred = cv2.GaussianBlur(a, (7, 7), 2.0)
    noisy = a + np.random.default_rng(0).normal(0, 20, a.shape)
    stretched = (a - a.mean()) * 1.5 + a.mean()
    assert metrics.vif_pair(a, blurred) < 0.9
    assert metrics.vif_pair(a, noisy) < 0.9
    # Sheikh & Bovik's VIF rewards a pure contrast gain (g > 1, no added noise) above 1.
    assert metrics.vif_pair(a, stretched) > 1.0


def test_vif_rejects_images_too_small_for_four_scales() -> None:
    with pytest.raises(ValueError, match="at least 41x41"):
        metrics.vif_pair(np.zeros((40, 60)), np.zeros((40, 60)))


# -- Qabf ----------------------------------------------------------------------------------


def _q_best() -> float:
    """Qg(1)·Qα(1) from the constants published by Xydeas & Petrović (2000)."""
    q_g = 0.9994 / (1 + math.exp(-15 * (1 - 0.5)))
    q_a = 0.9879 / (1 + math.exp(-22 * (1 - 0.8)))
    return q_g * q_a


def test_qabf_is_at_its_maximum_when_f_reproduces_the_sources() -> None:
    a = scene(8)
    assert metrics.qabf(a, a, a) == pytest.approx(_q_best())
    # A flat B carries no edges, hence no weight: F = A is still perfect.
    assert metrics.qabf(a, a, np.full_like(a, 90)) == pytest.approx(_q_best())


def test_qabf_is_near_zero_for_a_flat_result_and_drops_with_blur() -> None:
    a, b = scene(9), scene(10)
    assert metrics.qabf(np.full_like(a, 128), a, b) < 1e-3
    average = (a.astype(float) + b) / 2
    blurred = cv2.GaussianBlur(average, (9, 9), 3.0)
    assert metrics.qabf(blurred, a, b) < metrics.qabf(average, a, b) < _q_best()


# -- SSIM ----------------------------------------------------------------------------------


def test_ssim_matches_scikit_image() -> None:
    skimage_metrics = pytest.importorskip("skimage.metrics", reason="scikit-image not installed")
    a, f = scene(11), scene(12)
    f = ((f.astype(np.uint16) + a) // 2).astype(np.uint8)

    def reference(x: np.ndarray, y: np.ndarray) -> float:
        return skimage_metrics.structural_similarity(
            x.astype(np.float64), y.astype(np.float64), data_range=255, gaussian_weights=True,
            sigma=1.5, use_sample_covariance=False,
        )

    assert metrics.ssim_pair(a, f) == pytest.approx(reference(a, f), abs=1e-6)
    b = scene(13)
    assert metrics.ssim_sum(f, a, b) == pytest.approx(reference(a, f) + reference(b, f), abs=1e-6)
    assert metrics.ssim_pair(a, a) == pytest.approx(1.0)


def test_different_sizes_are_a_one_line_error() -> None:
    with pytest.raises(ValueError, match="different sizes: 64x48, 64x64"):
        metrics.evaluate(np.zeros((48, 64)), np.zeros((64, 64)), np.zeros((64, 64)))


def test_evaluate_returns_every_metric() -> None:
    a, b = scene(14), scene(15)
    values = metrics.evaluate((a.astype(float) + b) / 2, a, b)
    assert tuple(values) == metrics.METRICS
    assert all(math.isfinite(v) for v in values.values())
