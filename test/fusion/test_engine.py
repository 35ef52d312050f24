"""FusionEngine: colour, modes, devices, precision, against references and the spec's formulas."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from conftest import DATA, REFERENCE, psnr
from hypothesis import given, settings
from hypothesis import strategies as st

from gifnet_ros.fusion.engine import MODES, FusionEngine, autocast_dtype, resolve_device
from gifnet_ros.fusion.thermal import normalize_thermal

pytestmark = pytest.mark.shared

SAMPLES = DATA / "gifnet_samples"


@pytest.fixture(scope="module")
def engine(weights_path):
    return FusionEngine(weights_path, device="cpu", precision="fp32")


@pytest.fixture(autouse=True)
def _default_settings(request):
    """Tests that change the shared engine's mode or chroma rule get it back in default state."""
    yield
    if "engine" in request.fixturenames:
        engine = request.getfixturevalue("engine")
        engine.mode, engine.chroma_rule = "thermal_rgb", "neutral"


def _rgb(path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"cannot read {path}"
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _grey(path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert image is not None, f"cannot read {path}"
    return image


def _compare(out: np.ndarray, reference: np.ndarray, max_diff: int, max_fraction_over_1: float):
    diff = np.abs(out.astype(np.int16) - reference.astype(np.int16))
    print(f"max diff {diff.max()}, fraction > 1: {(diff > 1).mean():.2e}")
    assert out.shape == reference.shape
    assert diff.max() <= max_diff
    assert (diff > 1).mean() <= max_fraction_over_1


def test_grey_mode_on_reference_inputs_rounds_the_reference(engine):
    """On the authors' exact network inputs the luminance is round(reference) up to ties."""
    engine.mode = "grey"
    a, b = _grey(REFERENCE / "Medical_a.png"), _grey(REFERENCE / "Medical_b.png")
    expected = np.load(REFERENCE / "Medical_y.npy")
    out = engine.fuse(a, b)
    assert out.shape == a.shape and out.dtype == np.uint8
    assert np.abs(out.astype(np.float64) - expected).max() <= 0.5 + 1e-3


def test_thermal_rgb_from_camera_images_matches_authors_image(engine, data_dir):
    """RoadScene infrared + colour JPEG → the authors' colour result (JPEG decoders and the
    truncation of Y move a few pixels by a level or two,
    docs/network.md#checking-an-implementation)."""
    out = engine.fuse(
        _grey(data_dir / "roadscene/ir/FLIR_00548.jpg"),
        _rgb(data_dir / "roadscene/vis/FLIR_00548.jpg"),
    )
    _compare(out, _rgb(REFERENCE / "RS_FLIR_00548_fused.png"), 4, 1e-3)


def test_medical_takes_chroma_from_the_first_image(engine, data_dir):
    engine.mode = "medical"
    out = engine.fuse(_rgb(SAMPLES / "Medical/pet/1.png"), _grey(SAMPLES / "Medical/mri/1.png"))
    _compare(out, _rgb(REFERENCE / "Medical_fused.png"), 2, 1e-3)


def test_multi_focus_authors_rule_reproduces_their_image(engine, data_dir):
    engine.mode, engine.chroma_rule = "multi_focus", "authors"
    near, far = _rgb(SAMPLES / "MFIF/ir/1.jpg"), _rgb(SAMPLES / "MFIF/vis/1.jpg")
    reference = _rgb(REFERENCE / "MFIF_fused.png")
    _compare(engine.fuse(near, far), reference, 4, 1e-3)
    engine.chroma_rule = "neutral"  # the principled rule really differs from the quirk
    assert np.abs(engine.fuse(near, far).astype(int) - reference).max() > 4


def _expected_colour(first, second, luminance, mode, rule) -> np.ndarray | None:
    """docs/network.md#colour in float64 numpy, independent of the engine's torch code."""
    forward = np.array([[0.299, 0.587, 0.114], [-0.169, -0.331, 0.5], [0.5, -0.419, -0.081]])
    inverse = np.array([[0.0, 1.402], [-0.344136, -0.714136], [1.772, 0.0]])

    def chroma(image):
        return image.astype(np.float64) @ forward[1:].T if image.ndim == 3 else None

    sources = {
        "thermal_rgb": (False, True),
        "nir_rgb": (False, True),
        "medical": (True, False),
        "multi_focus": (True, True),
        "multi_exposure": (True, True),
        "grey": (False, False),
    }[mode]
    c1 = chroma(first) if sources[0] else None
    c2 = chroma(second) if sources[1] else None
    if c1 is None and c2 is None:
        return None
    if c1 is not None and c2 is not None:
        centre = 128.0 if rule == "authors" else 0.0
        w1, w2 = np.abs(c1 - centre), np.abs(c2 - centre)
        with np.errstate(invalid="ignore", divide="ignore"):
            c = np.where(w1 + w2 > 0, (c1 * w1 + c2 * w2) / (w1 + w2), centre)
    else:
        c = c1 if c1 is not None else c2
    rgb = luminance.astype(np.float64)[..., None] + c @ inverse.T
    return np.clip(rgb, 0, 255)


@settings(max_examples=20, deadline=None)
@given(
    mode=st.sampled_from(MODES),
    rule=st.sampled_from(["neutral", "authors"]),
    first_colour=st.booleans(),
    second_colour=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_colour_follows_the_spec_for_every_mode(
    engine, mode, rule, first_colour, second_colour, seed
):
    rng = np.random.default_rng(seed)
    first = rng.integers(0, 256, (20, 28, 3) if first_colour else (20, 28), dtype=np.uint8)
    second = rng.integers(0, 256, (20, 28, 3) if second_colour else (20, 28), dtype=np.uint8)
    engine.mode, engine.chroma_rule = mode, rule
    luminance, colour = engine.fuse_luminance(first, second)
    expected = _expected_colour(first, second, luminance, mode, rule)
    if expected is None:
        assert colour is None
        assert np.array_equal(engine.fuse(first, second), luminance)
        return
    assert colour is not None and colour.shape == (20, 28, 3) and colour.dtype == np.uint8
    # The engine uses the unrounded fused Y: half a level there moves RGB by at most one.
    assert np.abs(colour.astype(np.float64) - expected).max() <= 1.0 + 1e-6


def test_sixteen_bit_thermal_is_normalised_by_the_engine_rule(engine, weights_path):
    rng = np.random.default_rng(1)
    thermal = rng.integers(7000, 9000, (24, 32)).astype(np.uint16)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    direct = engine.fuse(thermal, rgb)
    assert np.array_equal(direct, engine.fuse(normalize_thermal(thermal), rgb))
    fixed = FusionEngine(
        weights_path, "cpu", "fp32", thermal_norm="fixed", thermal_range=(7000.0, 9000.0)
    )
    assert np.array_equal(
        fixed.fuse(thermal, rgb),
        engine.fuse(normalize_thermal(thermal, "fixed", value_range=(7000.0, 9000.0)), rgb),
    )


def test_grey_stored_as_colour_is_taken_as_grey(engine):
    rng = np.random.default_rng(2)
    grey = rng.integers(0, 256, (24, 32), dtype=np.uint8)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    assert np.array_equal(engine.fuse(np.dstack([grey] * 3), rgb), engine.fuse(grey, rgb))


def test_different_sizes_name_both(engine):
    with pytest.raises(ValueError, match="first is 32x24, second is 40x30") as err:
        engine.fuse(np.zeros((24, 32), np.uint8), np.zeros((30, 40, 3), np.uint8))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("first", "message"),
    [
        (np.zeros((24, 32, 4), np.uint8), "expected grey"),
        (np.zeros((24, 32, 3), np.uint16), "expected grey"),
        (np.zeros((4, 4), np.uint8), "at least 8x8"),
    ],
)
def test_bad_images_are_errors(engine, first, message):
    second = np.zeros((*first.shape[:2], 3), np.uint8)
    with pytest.raises(ValueError, match=message):
        engine.fuse(first, second)


def test_unknown_mode_is_an_error(engine):
    engine.mode = "panorama"
    with pytest.raises(ValueError, match="unknown fusion mode 'panorama'"):
        engine.fuse(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8))


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="cuda:N"):
        resolve_device("cuda:x")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_a_clear_error(spec):
    with pytest.raises(ValueError, match=f"device '{spec}' requested but PyTorch sees no CUDA"):
        resolve_device(spec)


def test_precision_rules():
    cpu = torch.device("cpu")
    assert autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="'fp16' needs a CUDA device"):
        autocast_dtype("fp16", cpu)
    with pytest.raises(ValueError, match="unknown precision 'int8'"):
        autocast_dtype("int8", cpu)


def test_bf16_stays_within_40_db_of_fp32(engine, weights_path):
    bf16 = FusionEngine(weights_path, "cpu", precision="bf16", mode="grey")
    engine.mode = "grey"
    for name in ("Medical", "RS_FLIR_00548"):
        a, b = _grey(REFERENCE / f"{name}_a.png"), _grey(REFERENCE / f"{name}_b.png")
        db = psnr(bf16.fuse(a, b), engine.fuse(a, b))
        print(f"{name}: bf16 vs fp32 PSNR {db:.1f} dB")
        assert db >= 40.0


def test_model_time_is_reported(engine):
    engine.fuse(np.zeros((16, 16), np.uint8), np.zeros((16, 16, 3), np.uint8))
    assert 0.0 < engine.last_model_seconds < 60.0


@pytest.mark.parametrize(
    "options",
    [
        {"mode": "thermal_rgb"},
        {"mode": "grey"},
        {"mode": "multi_exposure"},
        {"mode": "thermal_rgb", "inference_scale": 0.5},
        {"mode": "thermal_rgb", "backend": "classic_laplacian"},
    ],
    ids=["colour", "grey", "two-colour", "reduced-size", "classic"],
)
def test_fuse_batch_is_bit_equal_to_one_fuse_per_pair(weights_path, options):
    """fp32 on the CPU: a batch gives exactly the images of one fuse() per pair."""
    rng = np.random.default_rng(7)
    colour_first = options["mode"] == "multi_exposure"
    pairs = [
        (
            rng.integers(0, 256, (40, 56, 3) if colour_first else (40, 56), dtype=np.uint8),
            rng.integers(0, 256, (40, 56, 3), dtype=np.uint8),
        )
        for _ in range(3)
    ]
    pairs.append(
        (pairs[0][1], pairs[0][0]) if colour_first else (pairs[0][0].T.copy().T, pairs[1][1])
    )
    weights = None if "backend" in options else weights_path
    engine = FusionEngine(weights, "cpu", "fp32", **options)
    batch = engine.fuse_batch(pairs)
    assert len(batch) == len(pairs)
    for (first, second), out in zip(pairs, batch, strict=True):
        assert np.array_equal(out, engine.fuse(first, second))
    assert not np.array_equal(batch[0], batch[1])  # the samples really differ


def test_fuse_batch_takes_one_size_and_nothing_is_nothing(engine):
    rng = np.random.default_rng(8)
    small = (rng.integers(0, 256, (16, 24), dtype=np.uint8),) * 2
    large = (rng.integers(0, 256, (24, 24), dtype=np.uint8),) * 2
    with pytest.raises(ValueError, match="one size: 24x24 after 24x16") as err:
        engine.fuse_batch([small, large])
    assert "\n" not in str(err.value)
    assert engine.fuse_batch([]) == []
