"""The node's thermal-to-RGB alignment (gifnet_ros.fusion.align), without ROS."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gifnet_ros.fusion.align import IDENTITY, Alignment, AlignmentError

DTYPES = st.sampled_from([np.uint8, np.uint16, np.float32])


def _image(rng: np.random.Generator, shape: tuple[int, ...], dtype) -> np.ndarray:
    return (rng.random(shape) * 200).astype(dtype)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "affine"}, "align.method 'affine'"),
        ({"homography": [1.0] * 8}, "needs 9 numbers"),
        ({"homography": [1.0, 0, 0, 0, float("nan"), 0, 0, 0, 1]}, "NaN"),
        ({"homography": [1.0, 2.0, 0, 2.0, 4.0, 0, 0, 0, 1]}, "singular"),
        ({"crop": [0, 0, 4]}, "4 integers"),
        ({"crop": [0, -1, 4, 4]}, "negative"),
        ({"crop": [0, 0, 4, 0]}, "must both be positive"),
    ],
)
def test_bad_settings_are_refused_by_name(kwargs, message):
    with pytest.raises(AlignmentError, match=message) as error:
        Alignment.create(**kwargs)
    assert "\n" not in str(error.value)


@settings(max_examples=30, deadline=None)
@given(
    dtype=DTYPES,
    src=st.tuples(st.integers(8, 40), st.integers(8, 40)),
    dst=st.tuples(st.integers(8, 40), st.integers(8, 40)),
    seed=st.integers(0, 1000),
)
def test_resize_matches_opencv_and_keeps_the_dtype(dtype, src, dst, seed):
    thermal = _image(np.random.default_rng(seed), src, dtype)
    out = Alignment.create("resize").apply(thermal, (*dst, 3))
    assert out.shape == dst and out.dtype == thermal.dtype
    expected = thermal if src == dst else cv2.resize(thermal, dst[::-1])
    np.testing.assert_array_equal(out, expected)


@settings(max_examples=30, deadline=None)
@given(
    dtype=DTYPES,
    shift=st.tuples(st.integers(-6, 6), st.integers(-6, 6)),
    seed=st.integers(0, 1000),
)
def test_translation_homography_moves_pixels_exactly(dtype, shift, seed):
    """H = translation by (tx, ty): out[y + ty, x + tx] == in[y, x]; uncovered pixels are 0."""
    tx, ty = shift
    thermal = _image(np.random.default_rng(seed), (20, 30), dtype)
    matrix = [1.0, 0.0, tx, 0.0, 1.0, ty, 0.0, 0.0, 1.0]
    out = Alignment.create("homography", matrix).apply(thermal, (20, 30, 3))
    expected = np.zeros_like(thermal)
    expected[max(ty, 0) : 20 + min(ty, 0), max(tx, 0) : 30 + min(tx, 0)] = thermal[
        max(-ty, 0) : 20 - max(ty, 0), max(-tx, 0) : 30 - max(tx, 0)
    ]
    np.testing.assert_array_equal(out, expected)


def test_crop_comes_before_alignment():
    thermal = np.arange(30 * 40, dtype=np.uint16).reshape(30, 40)
    crop = Alignment.create("none", IDENTITY, [5, 3, 16, 12])
    np.testing.assert_array_equal(crop.apply(thermal, (12, 16)), thermal[3:15, 5:21])
    scaled = Alignment.create("resize", IDENTITY, [5, 3, 16, 12]).apply(thermal, (24, 32))
    np.testing.assert_array_equal(scaled, cv2.resize(thermal[3:15, 5:21], (32, 24)))


def test_crop_outside_the_image_and_size_mismatch_are_one_line_errors():
    thermal = np.zeros((30, 40), np.uint8)
    with pytest.raises(
        AlignmentError, match=r"align.crop \[30, 0, 16, 12\] does not fit the 40x30"
    ):
        Alignment.create("resize", IDENTITY, [30, 0, 16, 12]).apply(thermal, (12, 16))
    with pytest.raises(AlignmentError, match="thermal image is 40x30 but the RGB image is 64x48"):
        Alignment.create("none").apply(thermal, (48, 64, 3))
