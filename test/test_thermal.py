"""Thermal normalisation against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gifnet_ros.thermal import normalize_thermal


def test_uint8_passes_through_unchanged():
    image = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert normalize_thermal(image, "fixed", value_range=(10, 20)) is image


def test_fixed_range_maps_ends_and_middle():
    image = np.array([[7000, 8000, 9000, 6000, 10000]], dtype=np.uint16)
    out = normalize_thermal(image, "fixed", value_range=(7000.0, 9000.0))
    assert out.tolist() == [[0, 128, 255, 0, 255]]  # 127.5 rounds to even 128


def test_none_rule_is_full_range():
    image = np.array([[0, 257, 65535, 32896]], dtype=np.uint16)
    assert normalize_thermal(image, "none").tolist() == [[0, 1, 255, 128]]


def test_kelvin_float_with_dead_pixels():
    image = np.full((4, 4), 300.0, dtype=np.float32)
    image[0, 0], image[0, 1], image[0, 2] = np.nan, np.inf, -np.inf
    image[1, :] = 250.0
    image[2, :] = 350.0
    out = normalize_thermal(image, "fixed", value_range=(250.0, 350.0))
    assert out[0, :3].tolist() == [0, 0, 0]
    assert out[1].tolist() == [0] * 4 and out[2].tolist() == [255] * 4 and out[3, 0] == 128


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.uint16, st.tuples(st.integers(1, 20), st.integers(1, 20))),
    st.floats(0, 40),
    st.floats(60, 100),
)
def test_percentile_stretch_matches_independent_formula(image, p_lo, p_hi):
    out = normalize_thermal(image, "percentile", low_high=(p_lo, p_hi))
    values = image.astype(np.float64)
    lo, hi = np.percentile(values, p_lo), np.percentile(values, p_hi)
    if hi <= lo:
        assert not out.any()
        return
    expected = np.clip((values - lo) / (hi - lo), 0, 1) * 255
    assert np.abs(out.astype(np.float64) - expected).max() <= 0.5 + 1e-3
    assert out.dtype == np.uint8


def test_percentile_ignores_a_few_hot_pixels():
    rng = np.random.default_rng(0)
    image = rng.integers(7000, 7500, size=(100, 100)).astype(np.uint16)
    image[:3, :3] = 65535  # 9 hot pixels: under 1 %
    out = normalize_thermal(image)
    body = out[10:, 10:]
    assert body.max() >= 250 and body.min() <= 5  # the scene uses the whole output range


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rule": "log"}, "unknown thermal normalisation 'log'"),
        ({"rule": "fixed", "value_range": (5.0, 5.0)}, "empty"),
        ({"rule": "percentile", "low_high": (90.0, 10.0)}, "percentiles"),
    ],
)
def test_bad_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        normalize_thermal(np.zeros((4, 4), np.uint16), **kwargs)
    assert "\n" not in str(err.value)


def test_rejects_colour_and_odd_dtypes():
    with pytest.raises(ValueError, match="grey"):
        normalize_thermal(np.zeros((4, 4, 3), np.uint16))
    with pytest.raises(ValueError, match="int32"):
        normalize_thermal(np.zeros((4, 4), np.int32))
