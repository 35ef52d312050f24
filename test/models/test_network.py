"""The network against the authors' reference outputs, and its structural properties."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from conftest import REFERENCE, REFERENCE_CASES
from hypothesis import given, settings
from hypothesis import strategies as st

from gifnet_ros.models import gifnet as network
from gifnet_ros.models.gifnet import GIFNet, convert_state_dict, load_model, relative_position_input
from gifnet_ros.models.weights import WeightsError

pytestmark = pytest.mark.shared

SWIN = "extractor_multask.SwinTransformerSpecific."


@pytest.fixture(scope="module")
def model(weights_path):
    return load_model(weights_path, "cpu")


@pytest.fixture(scope="module")
def checkpoint(weights_path):
    return torch.load(weights_path, map_location="cpu", weights_only=True)


def _read_input(name: str, which: str) -> torch.Tensor:
    image = cv2.imread(str(REFERENCE / f"{name}_{which}.png"), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.ndim == 2, f"{name}_{which}.png is not a grey image"
    return torch.from_numpy(image).float()[None, None] / 255.0


def _run(model, first, second) -> np.ndarray:
    with torch.inference_mode():
        return model(first, second).numpy()


@pytest.mark.parametrize("name", REFERENCE_CASES)
def test_matches_authors_reference(model, name):
    """Acceptance: float32 CPU output ×255 within 1e-3 of the authors' float output."""
    expected = np.load(REFERENCE / f"{name}_y.npy")
    out = _run(model, _read_input(name, "a"), _read_input(name, "b"))[0, 0] * 255.0
    assert out.shape == expected.shape
    diff = float(np.abs(out - expected).max())
    print(f"{name}: max |ours - reference| = {diff:.3g} (0-255 scale)")
    assert diff < 1e-3


def test_reference_cases_present():
    assert len(REFERENCE_CASES) >= 6, (
        f"expected the shared reference cases, found {REFERENCE_CASES}"
    )


def test_relative_positions_equal_the_checkpoint_buffer(checkpoint):
    """Our g = sign(d)·ln(1+|d|) equals the authors' precomputed table in both blocks."""
    for block in (0, 1):
        stored = checkpoint[f"{SWIN}layer1.blocks.{block}.attn.attn.relative_positions"]
        assert torch.allclose(relative_position_input(), stored, atol=1e-6)


def test_batch_equals_single_samples(model):
    a = _read_input("Medical", "a")[..., 40:104, 20:92]
    b = _read_input("Medical", "b")[..., 40:104, 20:92]
    a2, b2 = torch.flip(a, dims=[-1]), 1.0 - b
    batch = _run(model, torch.cat([a, a2]), torch.cat([b, b2]))
    assert np.abs(batch[0] - _run(model, a, b)[0]).max() < 1e-5
    assert np.abs(batch[1] - _run(model, a2, b2)[0]).max() < 1e-5
    assert np.abs(batch[0] - batch[1]).max() > 1e-2  # the two samples really differ


def _with_band_rows(model, monkeypatch, rows: int, first, second) -> np.ndarray:
    monkeypatch.setattr(network, "_BAND_ROWS", rows)
    network._window_bands.cache_clear()  # the bands are cached per size
    try:
        return _run(model, first, second)
    finally:
        network._window_bands.cache_clear()


def test_pieces_equal_one_piece(model, monkeypatch):
    # On the CPU the attention runs a band of window rows at a time and the per-pixel steps
    # on pieces of rows; elsewhere (a GPU) as one band and one piece. Both arrangements, on an
    # odd-sized crop (reflection padding in the last band, both window shifts): one band of
    # windows per window row and pieces of 500 pixels, against one band and one piece.
    first = _read_input("RS_FLIR_00548", "a")[..., 3:78, 5:138]
    second = _read_input("RS_FLIR_00548", "b")[..., 3:78, 5:138]
    pieces = _with_band_rows(model, monkeypatch, 500, first, second)
    whole = _with_band_rows(model, monkeypatch, 10**9, first, second)
    assert np.abs(pieces - whole).max() * 255 < 1e-3


@settings(max_examples=10, deadline=None)
@given(h=st.integers(8, 60), w=st.integers(8, 60), seed=st.integers(0, 2**16))
def test_bands_of_one_window_row_equal_one_band(model, h, w, seed):
    # A stream runs band by band, V, local branch, attention and the per-pixel steps, and
    # writes a band's rows once no later band reads them; the reflection padding at the
    # bottom edge and the local branch's margins reach into neighbouring bands. At any size,
    # bands of one window row must give what one band of the whole image gives.
    rng = np.random.default_rng(seed)
    first = torch.from_numpy(rng.random((1, 1, h, w), dtype=np.float32))
    second = torch.from_numpy(rng.random((1, 1, h, w), dtype=np.float32))
    with pytest.MonkeyPatch.context() as patch:
        bands = _with_band_rows(model, patch, 1, first, second)
        whole = _with_band_rows(model, patch, 10**9, first, second)
    assert np.abs(bands - whole).max() * 255 < 1e-3


def _network_input(h: int, w: int, seed: int) -> torch.Tensor:
    """A random 1×H×W×2 input map of the encoder."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.random((1, h, w, 2), dtype=np.float32))


@settings(max_examples=15, deadline=None)
@given(data=st.data(), h=st.integers(8, 40), w=st.integers(8, 24), seed=st.integers(0, 2**16))
def test_encoder_rows_equal_rows_of_the_whole_map(model, data, h, w, seed):
    # On the CPU F is made a band of rows at a time from the rows of the input it depends on,
    # reflected only at the image's edges; any rows, from one to all, must be those rows of F
    # made from the whole image.
    x0 = _network_input(h, w, seed)
    first = data.draw(st.integers(0, h - 1))
    last = data.draw(st.integers(first + 1, h))
    with torch.inference_mode():
        rows = model.encoder.rows(x0, first, last)
        whole = model.encoder(x0)
    assert rows.shape == (1, last - first, w, 98)
    assert (rows - whole[:, first:last]).abs().max() < 1e-5


@settings(max_examples=8, deadline=None)
@given(
    h=st.integers(8, 30), w=st.integers(8, 30), band=st.integers(1, 9), seed=st.integers(0, 2**16)
)
def test_transformer_on_feature_rows_equals_it_on_the_whole_map(model, h, w, band, seed):
    # The embeddings of F's grid, padded by reflection to multiples of 4, made a band of rows
    # at a time (F's rows for each band made anew) must be those of the whole padded map, the
    # path off the CPU; so must the decoder's complement, which reads F again in bands.
    x0 = _network_input(h, w, seed)
    with pytest.MonkeyPatch.context() as patch, torch.inference_mode():
        patch.setattr(network._FeatureRows, "band", band)  # F in bands of `band` rows
        rows = network._FeatureRows(model.encoder, x0)
        m, pending = model.transformer(rows)
        z = model.decoder.complement(rows, m, pending, model.transformer.unembed)
        whole = model.encoder(x0)
        m_whole, pending_whole = model.transformer(whole)
        z_whole = model.decoder.complement(whole, m_whole, pending_whole, model.transformer.unembed)
    assert m.shape == m_whole.shape == (1, h + (4 - h % 4) % 4, w + (4 - w % 4) % 4, 98)
    assert (m - m_whole).abs().max() < 1e-4
    assert (pending - pending_whole).abs().max() < 1e-5
    assert (z - z_whole).abs().max() < 1e-4


@settings(max_examples=12, deadline=None)
@given(h=st.integers(8, 41), w=st.integers(8, 41), seed=st.integers(0, 2**16))
def test_any_size_from_8(model, h, w, seed):
    rng = np.random.default_rng(seed)
    first = torch.from_numpy(rng.random((1, 1, h, w), dtype=np.float32))
    second = torch.from_numpy(rng.random((1, 1, h, w), dtype=np.float32))
    out = _run(model, first, second)
    assert out.shape == (1, 1, h, w)
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("shape", [(1, 1, 7, 20), (1, 1, 20, 7)])
def test_too_small_is_an_error(model, shape):
    with pytest.raises(ValueError, match="at least 8"):
        model(torch.zeros(shape), torch.zeros(shape))


def test_mismatched_inputs_are_an_error(model):
    with pytest.raises(ValueError, match="one shape"):
        model(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 24))


def test_unused_checkpoint_parts_are_not_built():
    names = set(GIFNet().state_dict())
    assert not any("block1.stream_i" in n for n in names)
    assert not any("rec" in n for n in names)


def test_wrong_tensor_shape_names_the_key(checkpoint):
    broken = dict(checkpoint)
    key = "cnnDecoder.decoder.4.weight"
    broken[key] = torch.zeros(32, 64, 1, 1)
    with pytest.raises(
        WeightsError, match=r"cnnDecoder\.decoder\.4\.weight.*\(32, 64, 1, 1\)"
    ) as err:
        convert_state_dict(broken, "broken.model")
    assert "\n" not in str(err.value)


def test_missing_and_unknown_tensors_are_errors(checkpoint):
    missing = {k: v for k, v in checkpoint.items() if "patch_unembed" not in k}
    with pytest.raises(WeightsError, match=r"missing.*patch_unembed"):
        convert_state_dict(missing)
    extra = dict(checkpoint, **{"head.weight": torch.zeros(3)})
    with pytest.raises(WeightsError, match=r"unexpected tensor 'head\.weight'"):
        convert_state_dict(extra)


def test_load_model_rejects_wrong_shapes_from_a_file(checkpoint, tmp_path):
    broken = dict(checkpoint)
    broken["getSharedFeatures.conv_1.conv2d.weight"] = torch.zeros(32, 3, 3, 3)
    path = tmp_path / "broken.model"
    torch.save(broken, path)
    with pytest.warns(UserWarning), pytest.raises(WeightsError, match=r"conv_1\.conv2d\.weight"):
        load_model(path, verify_hash=False)
