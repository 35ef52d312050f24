"""Classical fusion rules: properties of each rule, and the engine's classic_* backends."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gifnet_ros.fusion.engine import FusionEngine
from gifnet_ros.fusion.thermal import normalize_thermal
from gifnet_ros.models.classic import METHODS, fuse_grey, fuse_laplacian


def picture(seed: int, shape: tuple[int, ...] = (48, 64)) -> np.ndarray:
    """A deterministic uint8 picture with edges: blocks plus noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (shape[0] // 8 + 1, shape[1] // 8 + 1, *shape[2:]))
    blocks = np.repeat(np.repeat(coarse, 8, axis=0), 8, axis=1)[: shape[0], : shape[1]]
    noisy = blocks + rng.normal(0, 6, blocks.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def classic(method: str, **options) -> FusionEngine:
    """The engine with a classical rule as its backend (no weights are looked for)."""
    return FusionEngine(backend=f"classic_{method}", **options)


def ycbcr(rgb: np.ndarray) -> np.ndarray:
    """BT.601 offset-free YCbCr (the engine's documented transform), written out here."""
    m = np.array([[0.299, 0.587, 0.114], [-0.169, -0.331, 0.5], [0.5, -0.419, -0.081]])
    return rgb.astype(np.float64) @ m.T


@pytest.mark.parametrize("method", METHODS)
def test_fusing_an_image_with_itself_returns_it(method: str) -> None:
    a = picture(1)
    assert np.array_equal(classic(method).fuse(a, a), a)


def test_average_and_max_are_the_per_pixel_rules() -> None:
    a, b = picture(2), picture(3)
    mean = np.round((a.astype(np.float64) + b) / 2).astype(np.uint8)  # halves to even, as torch
    assert np.array_equal(classic("average").fuse(a, b), mean)
    assert np.array_equal(classic("max").fuse(a, b), np.maximum(a, b))


@settings(max_examples=30, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(8, 70), st.integers(8, 70)),
        elements=st.floats(0, 255, width=32),
    )
)
def test_laplacian_pyramid_of_an_image_with_itself_reconstructs_it(a: np.ndarray) -> None:
    # Odd and even sizes alike: the collapsed pyramid is the image again.
    np.testing.assert_allclose(fuse_laplacian(a, a), a, atol=1e-3)


def test_laplacian_keeps_the_stronger_detail() -> None:
    # A step edge fused with a flat image: the flat image has no detail, so every detail
    # level comes from the edge and only the coarsest level is averaged. The step keeps
    # more of its contrast than in the plain average, where it is halved to 100.
    a = np.zeros((64, 64), np.float32)
    a[:, 32:] = 200
    b = np.full((64, 64), 100, np.float32)
    fused = fuse_laplacian(a, b)
    assert fused[:, 40].mean() - fused[:, 24].mean() > 110
    # Swapping the inputs changes nothing where no coefficients tie.
    np.testing.assert_allclose(fuse_laplacian(b, a), fused, atol=1e-4)


def test_gff_prefers_the_sharper_source() -> None:
    import cv2

    sharp = picture(4).astype(np.float32)
    blurred = cv2.GaussianBlur(sharp, (9, 9), 3.0)
    fused = fuse_grey("gff", sharp, blurred)
    average = fuse_grey("average", sharp, blurred)
    assert np.abs(fused - sharp).mean() < 0.5 * np.abs(average - sharp).mean()


@settings(max_examples=20, deadline=None)
@given(
    method=st.sampled_from(METHODS),
    height=st.integers(8, 40),
    width=st.integers(8, 40),
    seed=st.integers(0, 2**32 - 1),
    thermal_dtype=st.sampled_from([np.uint8, np.uint16, np.float32]),
    colour=st.booleans(),
)
def test_outputs_have_the_engine_shape_dtype_and_range(
    method: str, height: int, width: int, seed: int, thermal_dtype: type, colour: bool
) -> None:
    rng = np.random.default_rng(seed)
    top = {np.uint8: 255, np.uint16: 65535, np.float32: 330.0}[thermal_dtype]
    thermal = (rng.random((height, width)) * top).astype(thermal_dtype)
    shape = (height, width, 3) if colour else (height, width)
    visible = rng.integers(0, 256, shape, dtype=np.uint8)
    fusion = classic(method)
    fused = fusion.fuse(thermal, visible)
    assert fused.dtype == np.uint8
    assert fused.shape == shape
    luminance, rgb = fusion.fuse_luminance(thermal, visible)
    assert luminance.shape == (height, width)
    assert (rgb is not None) == colour
    assert fusion.last_model_seconds > 0


def test_sixteen_bit_thermal_is_normalised_like_the_engine() -> None:
    rng = np.random.default_rng(5)
    thermal = rng.integers(7000, 9000, (32, 40)).astype(np.uint16)
    visible = picture(6, (32, 40))
    expected = np.maximum(normalize_thermal(thermal), visible)
    assert np.array_equal(classic("max").fuse(thermal, visible), expected)


@pytest.mark.parametrize("method", METHODS)
def test_chroma_comes_from_the_rgb_image(method: str) -> None:
    rng = np.random.default_rng(7)
    # Mid-range colours, so no channel clips when the luminance changes.
    rgb = rng.integers(70, 186, (40, 48, 3)).astype(np.uint8)
    thermal = picture(8, (40, 48)) // 4 + 96
    fused = classic(method).fuse(thermal, rgb)
    assert fused.shape == rgb.shape
    # Cb and Cr survive up to the rounding of three channels (and the ±0.001 of the matrix).
    np.testing.assert_allclose(ycbcr(fused)[..., 1:], ycbcr(rgb)[..., 1:], atol=1.0)


def test_average_with_the_rgb_own_luminance_returns_the_rgb_image() -> None:
    rng = np.random.default_rng(9)
    rgb = rng.integers(60, 196, (32, 32, 3)).astype(np.uint8)
    own_y = np.floor(ycbcr(rgb)[..., 0]).astype(np.uint8)
    fused = classic("average").fuse(own_y, rgb)
    assert np.abs(fused.astype(int) - rgb).max() <= 1


def test_grey_mode_and_colour_first_input() -> None:
    rgb = picture(10, (24, 32, 3))
    grey = picture(11, (24, 32))
    assert classic("max", mode="grey").fuse(grey, rgb).shape == (24, 32)
    assert classic("average", mode="multi_focus").fuse(rgb, rgb).shape == (24, 32, 3)


def test_bad_input_is_a_one_line_error() -> None:
    with pytest.raises(ValueError, match="unknown backend 'classic_median'"):
        classic("median")
    with pytest.raises(ValueError, match="unknown fusion mode"):
        classic("max", mode="sonar")
    with pytest.raises(ValueError, match="first is 32x24, second is 30x24"):
        classic("max").fuse(np.zeros((24, 32), np.uint8), np.zeros((24, 30, 3), np.uint8))


def test_classic_backends_load_no_weights_and_run_on_the_cpu_in_fp32(monkeypatch, tmp_path):
    # Nowhere to find a checkpoint: a GIFNet engine would fail, a classic one does not look.
    monkeypatch.setenv("GIFNET_WEIGHTS", str(tmp_path / "missing.model"))
    monkeypatch.setenv("GIFNET_CACHE_DIR", str(tmp_path))
    engine = classic("gff", device="auto")
    assert engine.model is None and engine.device.type == "cpu"
    assert engine.fuse(picture(12), picture(13)).shape == (48, 64)
    with pytest.raises(ValueError, match=r"classic_gff.*runs on the CPU"):
        classic("gff", device="cuda")
    with pytest.raises(ValueError, match=r"classic_max.*fp32 only"):
        classic("max", precision="bf16")
    with pytest.raises(ValueError, match="compile applies to the torch backend only"):
        classic("max", compile=True)


def test_too_small_images_name_the_backend() -> None:
    with pytest.raises(ValueError, match=r"4x4 are too small: .*classic_laplacian.*8x8"):
        classic("laplacian").fuse(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8))


@pytest.mark.parametrize("method", METHODS)
def test_run_model_batches_give_the_rule_per_sample(method: str) -> None:
    """The public batch entry point (benchmarks use it) agrees with the rule itself."""
    import torch

    a = np.stack([picture(14), picture(15)]).astype(np.float32)
    b = np.stack([picture(16), picture(17)]).astype(np.float32)
    first, second = (torch.from_numpy(x / 255)[:, None] for x in (a, b))
    out = classic(method).run_model(first, second)
    assert out.shape == (2, 1, 48, 64)
    for k in range(2):
        expected = fuse_grey(method, a[k], b[k])
        np.testing.assert_allclose(out[k, 0].numpy() * 255, expected, atol=1e-3)
