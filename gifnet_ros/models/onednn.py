"""GIFNet's per-pixel matrix products as oneDNN 1×1 convolutions, bias and ReLU inside (CPU).

The transformer is mostly products of an H·W×98 map with a 98×98, 98×196 or 196×98 matrix:
Q/K/V projections with a bias, the MLP's first layer with a bias and a ReLU, and residual sums
``x += W·y``. On the CPU, ``torch.addmm`` copies the bias into every output row before the
product (a pass over a map as large as the output), the ReLU is a second pass, and fp32
products go to MKL, which is slower than oneDNN at an inner dimension of 98 or 196. oneDNN's
1×1 convolution over a channels-last, one-pixel-wide image (no copy of the map) takes the bias
and the ReLU into the product, and with a sum post-op adds into the residual map where it lies.
Side by side on an AVX2 CPU in fp32: 0.85-0.91× the time of the whole network, output within
1e-4 of the 0-255 scale (benchmarks/fused_products.py; figures and peak memory in
benchmarks/README.md).

oneDNN's inner product (``_linear_pointwise``), as fast, is not used: with the heap the engine
keeps (fusion/allocator.py), every new row count grew the resident memory by about 13 MB
(514 MB over 40 row counts, none with oneDNN's primitive cache off), which broke the memory
target over a change of image size.

Only for the dtypes in FUSED_DTYPES and where this PyTorch and CPU run the operators: a
one-time probe per dtype, because builds without oneDNN lack them. bfloat16 is left out until
measured on a CPU with native bf16, where PyTorch's bf16 products are already oneDNN's
(``benchmarks/fused_products.py --dtype bfloat16`` is that measurement).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

FUSED_DTYPES = frozenset({torch.float32})
_ONE_BY_ONE = ([0, 0], [1, 1], [1, 1], 1)  # padding, stride, dilation, groups


def _image(flat: Tensor) -> Tensor:
    """A contiguous rows×C matrix seen as a 1×C×rows×1 channels-last image: the same memory."""
    rows, channels = flat.shape
    return flat.view(1, rows, 1, channels).permute(0, 3, 1, 2)


def _kernel(weight: Tensor, dtype: torch.dtype) -> Tensor:
    """A Cout×Cin weight as the Cout×Cin×1×1 kernel of a 1×1 convolution."""
    return weight.to(dtype).reshape(*weight.shape, 1, 1).contiguous()


@functools.cache
def _supported(dtype: torch.dtype) -> bool:
    """Whether oneDNN's fused 1×1 convolutions run here in `dtype`: tried once, on tiny maps."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        rows = torch.ones(2, 3, dtype=dtype)
        weight = torch.ones(4, 3, dtype=dtype)
        accumulate(linear(rows, weight, torch.ones(4, dtype=dtype), relu=True), rows, weight)
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return True


def usable(x: Tensor) -> bool:
    """Whether products of the map x take this path: a CPU map of a fused dtype, where oneDNN
    runs them."""
    return x.device.type == "cpu" and x.dtype in FUSED_DTYPES and _supported(x.dtype)


def linear(flat: Tensor, weight: Tensor, bias: Tensor, relu: bool = False) -> Tensor:
    """flat (rows×Cin) times weightᵀ (weight Cout×Cin) plus bias, then ReLU if asked:
    rows×Cout, each output element written once."""
    out = torch.ops.mkldnn._convolution_pointwise(
        _image(flat.contiguous()),
        _kernel(weight, flat.dtype),
        bias.to(flat.dtype),
        *_ONE_BY_ONE,
        "relu" if relu else "none",
        [],
        "",
    )
    # The output is channels-last like its input: back to rows×Cout is a view.
    return out.permute(0, 2, 3, 1).reshape(flat.shape[0], weight.shape[0])


def accumulate(out: Tensor, inputs: Tensor, weight: Tensor) -> None:
    """out += inputs times weightᵀ, in place: out (rows×Cout, contiguous) and inputs
    (rows×Cin) as channels-last images, the product's sum post-op adding into out."""
    if not out.is_contiguous():  # oneDNN would add into a copy and leave out as it was
        raise ValueError("accumulate needs a contiguous output map")
    torch.ops.mkldnn._convolution_pointwise_.binary(
        _image(out),
        _image(inputs.contiguous()),
        _kernel(weight, out.dtype),
        None,
        *_ONE_BY_ONE,
        "add",
        1.0,
        None,
        [],
        None,
    )
