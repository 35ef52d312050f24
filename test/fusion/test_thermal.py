"""Thermal normalisation against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gifnet_ros.fusion.thermal import (
    RESTART_GAP,
    RangeFilter,
    frame_range,
    normalize_thermal,
    smoothed_ranges,
)

SECOND = 1_000_000_000  # stamps are nanoseconds


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


# -- the range over time -------------------------------------------------------------------


def _finite_percentiles(image: np.ndarray, low_high: tuple[float, float]) -> tuple[float, float]:
    values = image.astype(np.float64)
    values = values[np.isfinite(values)]
    lo, hi = np.percentile(values, low_high)
    return float(lo), float(hi)


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 16), st.integers(1, 16)),
        elements=st.floats(-1e4, 1e4, width=32) | st.sampled_from([np.nan, np.inf, -np.inf]),
    ),
    st.floats(0, 40),
    st.floats(60, 100),
)
def test_frame_range_is_the_percentiles_of_the_finite_pixels(image, p_lo, p_hi):
    own = frame_range(image, (p_lo, p_hi))
    if not np.isfinite(image).any():
        assert own is None
        return
    lo, hi = _finite_percentiles(image, (p_lo, p_hi))
    if hi <= lo:
        assert own is None
        return
    assert own == pytest.approx((lo, hi), rel=1e-5, abs=1e-3)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(arrays(np.uint16, (6, 7)), min_size=1, max_size=6),
    st.lists(st.integers(0, 3 * SECOND), min_size=6, max_size=6),
)
def test_time_constant_zero_is_the_per_frame_rule(images, gaps):
    smoother = RangeFilter(0.0)
    stamp = 0
    for image, gap in zip(images, gaps[: len(images)], strict=True):
        stamp += gap
        stretch = smoother.update(stamp, frame_range(image, (1.0, 99.0)))
        lo, hi = _finite_percentiles(image, (1.0, 99.0))
        if hi <= lo:
            assert stretch is None
            assert not normalize_thermal(image).any()
            continue
        assert stretch == pytest.approx((lo, hi), rel=1e-6)
        same = normalize_thermal(image, "fixed", value_range=stretch)
        np.testing.assert_array_equal(same, normalize_thermal(image))


@settings(max_examples=60, deadline=None)
@given(
    st.floats(0.05, 2.0),
    st.lists(st.floats(0.001, 0.99), min_size=1, max_size=30),
    st.floats(1, 20),
)
def test_a_step_is_followed_by_the_exponential_law_of_the_stamps(tau, gap_shares, extent):
    """Range A until stamp 0, then B: s(t) = B + (A - B) exp(-t / tau) at every later stamp,
    whatever the gaps between them (each under the restart gap)."""
    before, after = (7000.0, 7000.0 + 100.0 * extent), (7500.0, 9000.0)
    smoother = RangeFilter(tau)
    assert smoother.update(-SECOND // 10, before) == before  # first frame: its own range
    assert smoother.update(0, before) == before
    stamp = 0
    for share in gap_shares:
        stamp += round(share * RESTART_GAP * tau * SECOND)
        got = smoother.update(stamp, after)
        decay = math.exp(-stamp / SECOND / tau)
        expected = tuple(b + (a - b) * decay for a, b in zip(before, after, strict=True))
        assert got == pytest.approx(expected, rel=1e-9)


def test_stamp_back_or_long_gap_restarts_and_flat_frames_keep_the_state():
    tau = 0.4
    smoother = RangeFilter(tau)
    smoother.update(0, (7000.0, 8000.0))
    moved = smoother.update(SECOND // 30, (7200.0, 9000.0))
    assert 7000.0 < moved[0] < 7200.0 and 8000.0 < moved[1] < 9000.0
    assert smoother.update(SECOND // 15, None) == moved  # flat: stretched with the state
    # The next frame's gap counts from the last frame with a range.
    weight = 1.0 - math.exp(-(SECOND // 30) / SECOND / tau)
    assert smoother.update(SECOND // 15, (7000.0, 8000.0)) == pytest.approx(
        tuple(m + weight * (f - m) for m, f in zip(moved, (7000.0, 8000.0), strict=True))
    )
    assert smoother.update(SECOND // 20, (6000.0, 6500.0)) == (6000.0, 6500.0)  # back in time
    just_under = int(RESTART_GAP * tau * SECOND) - 1000
    assert smoother.update(SECOND // 20 + just_under, (7000.0, 8000.0)) != (7000.0, 8000.0)
    far = SECOND // 20 + just_under + int(RESTART_GAP * tau * SECOND) + 1000
    assert smoother.update(far, (100.0, 200.0)) == (100.0, 200.0)  # a long gap: starts over
    smoother.reset()
    assert smoother.update(far + 1, None) is None
    assert smoother.update(far + 2, (1.0, 2.0)) == (1.0, 2.0)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 10 * SECOND),
            st.one_of(st.none(), st.tuples(st.floats(0, 100), st.floats(200, 300))),
        ),
        max_size=25,
    ),
    st.randoms(use_true_random=False),
)
def test_smoothed_ranges_filter_in_stamp_order_whatever_the_input_order(frames, rnd):
    tau = 0.3
    order = sorted(range(len(frames)), key=lambda i: frames[i][0])  # stable: ties keep order
    smoother = RangeFilter(tau)
    in_order = {i: smoother.update(*frames[i]) for i in order}
    assert smoothed_ranges(frames, tau) == [in_order[i] for i in range(len(frames))]
    # Shuffling frames of distinct stamps gives each frame the same range.
    distinct = list({stamp: (stamp, rng) for stamp, rng in frames}.values())
    shuffled = distinct[:]
    rnd.shuffle(shuffled)
    by_stamp = dict(zip([s for s, _ in distinct], smoothed_ranges(distinct, tau), strict=True))
    got = smoothed_ranges(shuffled, tau)
    assert got == [by_stamp[stamp] for stamp, _ in shuffled]


def test_a_constant_scene_keeps_its_range_exactly():
    rng = np.random.default_rng(1)
    scene = rng.normal(8000.0, 300.0, size=(60, 80)).astype(np.float32)
    scene[5, 5] = np.nan  # a dead pixel: ignored
    own = frame_range(scene, (1.0, 99.0))
    stamps = np.cumsum(rng.integers(SECOND // 60, SECOND // 10, size=40))
    for stamp, stretch in zip(
        stamps, smoothed_ranges([(int(s), own) for s in stamps], 0.4), strict=True
    ):
        assert stretch == own, stamp


@pytest.mark.parametrize("tau", [-0.1, math.nan, math.inf])
def test_bad_time_constant_is_a_one_line_error(tau):
    with pytest.raises(ValueError, match="time constant") as err:
        RangeFilter(tau)
    assert "\n" not in str(err.value)
