"""oneDNN's fused products (models/onednn.py) against float64 arithmetic, and the network with
and without them."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gifnet_ros.models import onednn

pytestmark = pytest.mark.skipif(
    not onednn._supported(torch.float32),
    reason="this PyTorch build has no oneDNN fused convolution (the addmm path runs instead)",
)

_SHAPES = st.tuples(
    st.integers(1, 300), st.integers(1, 200), st.integers(1, 200), st.integers(0, 2**31 - 1)
)


def _operands(rows: int, c_in: int, c_out: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, c_in, generator=generator)
    weight = torch.randn(c_out, c_in, generator=generator) / c_in**0.5
    bias = torch.randn(c_out, generator=generator)
    return x, weight, bias


def _close(result: torch.Tensor, expected: torch.Tensor) -> None:
    assert result.shape == expected.shape
    error = float((result.double() - expected).abs().max())
    assert error < 1e-4 * (1 + float(expected.abs().max())), error


@settings(max_examples=40, deadline=None)
@given(_SHAPES, st.booleans())
def test_linear_is_the_biased_product(shape, relu):
    x, weight, bias = _operands(*shape)
    expected = x.double() @ weight.double().t() + bias.double()
    _close(onednn.linear(x, weight, bias, relu), expected.relu() if relu else expected)


@settings(max_examples=40, deadline=None)
@given(_SHAPES)
def test_accumulate_adds_into_the_map_in_place(shape):
    x, weight, bias = _operands(*shape)
    out = bias.expand(x.shape[0], -1).contiguous() * 3
    expected = out.double() + x.double() @ weight.double().t()
    pointer = out.data_ptr()
    onednn.accumulate(out, x, weight)
    assert out.data_ptr() == pointer
    _close(out, expected)


def test_inputs_that_are_not_contiguous_are_read_as_they_are():
    """A column slice of a wider map (row stride larger than its width) as input."""
    wide, weight, bias = _operands(50, 30, 7, seed=1)
    x = wide[:, 5:25]
    weight = weight.repeat(1, 2)[:, :20]
    expected = x.double() @ weight.double().t()
    _close(onednn.linear(x, weight, bias), expected + bias.double())
    out = torch.zeros(50, 7)
    onednn.accumulate(out, x, weight)
    _close(out, expected)


def test_an_output_that_is_not_contiguous_is_refused_untouched():
    """An in-place sum into a strided view would land in oneDNN's copy of it."""
    x, weight, _ = _operands(20, 8, 6, seed=2)
    storage = torch.zeros(20, 12)
    with pytest.raises(ValueError, match="contiguous"):
        onednn.accumulate(storage[:, :6], x, weight)
    assert not storage.any()


def test_the_fused_path_is_what_float32_cpu_maps_take_here():
    """So the network's reference tests, which run in float32 on this CPU, exercise it."""
    assert onednn.usable(torch.zeros(1, 4, 4, 98))
    assert not onednn.usable(torch.zeros(1, 4, 4, 98, dtype=torch.bfloat16))
    assert not onednn.usable(torch.zeros(1, 4, 4, 98, device="meta"))


@pytest.mark.shared
def test_network_output_is_that_of_the_addmm_path(weights_path, monkeypatch):
    """The whole network, fused and through addmm/addmm_, on one random pair: the same
    image to float rounding (0-255 scale)."""
    from gifnet_ros.models.gifnet import load_model

    model = load_model(weights_path, "cpu")
    generator = torch.Generator().manual_seed(3)
    first, second = torch.rand(2, 1, 1, 72, 88, generator=generator)
    with torch.inference_mode():
        fused = model(first, second)
        monkeypatch.setattr(onednn, "FUSED_DTYPES", frozenset())
        plain = model(first, second)
    assert float((fused - plain).abs().max()) * 255 < 1e-3
