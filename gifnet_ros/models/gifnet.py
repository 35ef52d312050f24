"""The GIFNet inference network, written from its specification (docs/network.md).

Section names and step numbers in the comments below are those of docs/network.md.

Only the path that produces the fused image is built: the shared dense
encoder, the interaction transformer (stream I of block 0 feeds stream M;
block 1's stream I is never used, so it does not exist here) and the fusion
decoder. The checkpoint's reconstruction decoder and "ivif" mixing weights are
recognised and ignored when loading.

The forward pass is organised for speed on a CPU (oneDNN) and keeps the same
arithmetic as the specification up to float rounding (the authors' reference
outputs are met to well below 1e-3 on the 0-255 scale):

- Feature maps are N×H×W×C (channels last): 3×3 convolutions take oneDNN's
  NHWC path and every 1×1 convolution is one matrix product on an H·W×C view,
  with no layout conversion in between.
- Linear steps are folded into the weights of the next linear step, once per
  image (the weights are tiny, the maps are not): the revised layer norm's
  affine map into the Q/K/V projection, the modulation r, t into the output
  projection, the decoder's first 1×1 half on G into the unembedding 3×3
  convolution, and its second 1×1 convolution into the first 3×3 decoder
  layer (reflection padding commutes with a per-pixel linear map). That last
  fold also removes about 4% of the FLOPs.
- Per-channel constants that would cost a pass over a map (biases of the
  residual branches) are carried beside the map as a pending bias and folded
  into the next consumer's weights.
- Residual additions are written into the residual map by the matrix product
  itself (``addmm_``); ReLUs run in place. In fp32 on the CPU the per-pixel products
  are oneDNN 1×1 convolutions instead, with the bias, the MLP's ReLU and the residual
  sum inside (gifnet_ros/models/onednn.py). The window attention uses
  PyTorch's fused ``scaled_dot_product_attention`` with a 4-D bias, which
  selects the fused (flash) CPU kernel where a 3-D bias falls back to the
  unfused one.

Traced for export (ONNX) the graph is the plain one, arranged for the memory of
the runtime that executes it rather than for oneDNN: ONNX Runtime runs an
exported graph in the order of a depth-first walk back from the output and
holds every tensor until its last consumer has run, so the traced path (see
_tracing) computes Q and K by separate products, folds the attention's scale
into the query weights and writes the attention out (no scaled copies of Q
and K), traces each stream's local branch before its attention (the walk then
runs it after), and recomputes the encoder's F for the decoder instead of
holding it through the transformer. Each shortens the time a full-size map
stays alive in that order, and the maps alive together are what sets the
runtime's peak memory (measurements: benchmarks/README.md, "ONNX Runtime
memory"). torch.compile traces the same path.

Eagerly on the CPU, each stream of a block runs a band of window rows at a time (about
16384 tokens): V of the band's rows, its local branch, the attention of its windows and the
per-pixel steps (projection, MLP) written back into the stream's map once no later band
reads those rows. No V, branch, window or hidden map of the whole image exists, and a
band's pieces stay in cache from one step to the next. Nor is F ever whole there: the
embeddings and the decoder's first layer each make the rows of F they read, a band at a
time, from the rows of the input those depend on (the encoder twice, about 4 % more
arithmetic), so at the peak only the two streams' maps are whole: two full-size maps where
there were five, 614 → 293 MiB of live tensors at 640×480 in fp32
(benchmarks/live_tensors.py). The decoder's first layer writes F's part into G's map and
the caller drops M before the 3×3 layers. The maps that remain are reused allocations (the
engine keeps freed memory, see gifnet_ros/fusion/allocator.py), not fresh page faults on
every pair.

This module imports no ROS: the engine, the node and the offline tools all
share it.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional torch alias)
from torch import Tensor, nn

from gifnet_ros.models import MIN_SIZE, onednn
from gifnet_ros.models.weights import WeightsError, load_state_dict

WINDOW = 8
HEADS = 2
HEAD_DIM = 49
DIM = HEADS * HEAD_DIM  # 98 feature channels in the transformer
NORM_EPS = 1e-5
# Rows of an H·W×C map whose squared deviations the layer norm sums at a time on the CPU
# (25 MB): a reused buffer instead of one more full-size map, in few enough pieces that the
# per-operation overhead (thread wake-ups) stays small.
_STATS_ROWS = 65536
# Rows (pixels or window tokens) per piece of the per-pixel steps and the window attention on
# the CPU: a piece's maps (6 MB of 2·98-channel bfloat16 tokens) stay in cache from one step
# to the next and are reused allocations rather than fresh full-size maps.
_BAND_ROWS = 16384


def _tracing() -> bool:
    """True while torch.export (ONNX) or torch.compile traces the network: sizes may then be
    symbolic, so no shortcut or cache may depend on their values."""
    # torch.compiler.is_exporting exists from PyTorch 2.7 on; older versions' torch.export
    # traces through dynamo, where is_compiling() holds.
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return torch.compiler.is_compiling() or (is_exporting is not None and is_exporting())


def _pad(x: Tensor, top: int, bottom: int, left: int, right: int) -> Tensor:
    """Reflection-pad (no edge repeat) an N×H×W×C map; returns a contiguous N×H'×W'×C map."""
    if not _tracing() and top == bottom == left == right == 0:
        return x
    padded = F.pad(x.permute(0, 3, 1, 2), (left, right, top, bottom), mode="reflect")
    return padded.permute(0, 2, 3, 1).contiguous()


def _conv(
    x: Tensor, weight: Tensor, bias: Tensor | None, groups: int = 1, pad: int | tuple[int, int] = 0
) -> Tensor:
    """Convolution of an N×H×W×C map with `pad` zeros (all sides, or (rows, columns)), in
    oneDNN's channels-last layout."""
    weight = weight.to(x.dtype).contiguous(memory_format=torch.channels_last)
    bias = None if bias is None else bias.to(x.dtype)
    out = F.conv2d(x.permute(0, 3, 1, 2), weight, bias, padding=pad, groups=groups)
    return out.permute(0, 2, 3, 1).contiguous()


def _reflect_conv(x: Tensor, weight: Tensor, bias: Tensor | None, groups: int = 1) -> Tensor:
    """A k×k layer of GIFNet: the convolution of x reflect-padded by p = k // 2.

    Padding the whole map would copy it; instead the convolution runs with zero
    padding, and only its p-pixel frame, the part zeros and reflections see
    differently, is recomputed from thin reflect-padded strips (3p rows or
    columns hold everything the frame depends on). Traced for export, it is the
    plain padded convolution.
    """
    p = weight.shape[-1] // 2
    if _tracing():  # a smaller graph; runtimes fuse the padding themselves
        return _conv(_pad(x, p, p, p, p), weight, bias, groups)
    out = _conv(x, weight, bias, groups, pad=p)
    if p == 0:
        return out
    h, w, e = x.shape[1], x.shape[2], 3 * p
    # Opposite strips have one shape: one convolution each for rows and for columns.
    rows = _conv(_pad(torch.cat([x[:, :e], x[:, h - e :]]), p, p, p, p), weight, bias, groups)
    out[:, :p], out[:, h - p :] = rows[:1, :p], rows[1:, -p:]
    columns = torch.cat([x[:, :, :e], x[:, :, w - e :]])
    columns = _conv(_pad(columns, p, p, p, p), weight, bias, groups)
    out[:, :, :p], out[:, :, w - p :] = columns[:1, :, :p], columns[1:, :, -p:]
    return out


def _reflect_conv_rows(
    x: Tensor, weight: Tensor, bias: Tensor | None, groups: int, top: bool, bottom: bool
) -> Tensor:
    """Some whole rows of a k×k layer of GIFNet (_reflect_conv of the image), from x: those
    rows of the image and p = k // 2 more on each side, except where `top` or `bottom` says
    the rows reach the image's edge. Only the edges of the image are reflect-padded, so a
    band of rows costs one convolution over its own rows and two thin column strips."""
    p = weight.shape[-1] // 2
    if top or bottom:
        x = _pad(x, p if top else 0, p if bottom else 0, 0, 0)
    out = _conv(x, weight, bias, groups, pad=(0, p))
    w, e = x.shape[2], 3 * p
    columns = _pad(torch.cat([x[:, :, :e], x[:, :, w - e :]]), 0, 0, p, p)
    columns = _conv(columns, weight, bias, groups)
    out[:, :, :p], out[:, :, w - p :] = columns[:1, :, :p], columns[1:, :, -p:]
    return out


def _crop(x: Tensor, h: int, w: int) -> Tensor:
    """The top-left h×w of a 1×H'×W'×C map. While tracing, a row gather: the contiguity
    checks on a cropped view would pin H' and W' to H and W in an exported graph."""
    if not _tracing():
        return x[:, :h, :w]
    pixel = torch.arange(h * w, device=x.device)
    y = pixel // w
    rows = y * x.shape[2] + pixel - y * w
    return x.reshape(-1, x.shape[-1]).index_select(0, rows).view(1, h, w, x.shape[-1])


def _fused_products(x: Tensor) -> bool:
    """Whether products of the map x run as oneDNN's fused convolutions: eagerly only, since
    exported and compiled graphs keep plain products (runtimes fuse those themselves)."""
    return not _tracing() and onednn.usable(x)


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None, relu: bool = False) -> Tensor:
    """A 1×1 convolution (weight Cout×Cin) of an N×H×W×C map, as one matrix product, then
    ReLU if asked (inside the product where oneDNN takes it)."""
    flat = x.reshape(-1, x.shape[-1])
    if bias is not None and _fused_products(x):
        return onednn.linear(flat, weight, bias, relu).view(*x.shape[:-1], weight.shape[0])
    weight = weight.to(x.dtype).t()
    # The bias in the product: with freed memory kept (fusion/allocator.py), addmm's broadcast copy
    # of it costs less than a second pass over the output.
    out = flat @ weight if bias is None else torch.addmm(bias.to(x.dtype), flat, weight)
    if relu:
        out.relu_()
    return out.view(*x.shape[:-1], weight.shape[1])


def _accumulate(x: Tensor, inputs: Tensor, weight: Tensor) -> None:
    """x += 1×1 convolution of `inputs`, written into x by the matrix product (no temporary).
    oneDNN's sum post-op needs x contiguous; a strided x takes addmm_."""
    flat = inputs.reshape(-1, inputs.shape[-1])
    if _fused_products(x) and x.is_contiguous():
        onednn.accumulate(x.view(-1, x.shape[-1]), flat, weight)
        return
    x.view(-1, x.shape[-1]).addmm_(flat, weight.to(x.dtype).t())


def _staged_sum(x: Tensor) -> Tensor:
    """Sum of a 1×H×W×C map in float32: along W, then H, then C.

    For exported graphs: runtimes such as ONNX Runtime add a reduction's terms
    in order, and one sum over a whole map loses the digits the 1e-3 agreement
    needs; in stages no partial sum runs over more than max(H, W, C) terms.
    """
    return x.sum(dim=2, dtype=torch.float32).sum(dim=1).sum()


def _moments(x: Tensor, pending: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and σ (step 1 of a block) of x + pending over one sample's H, W and C, in float32.

    `pending` is a per-channel bias not yet added to x. A one-pass E[x²] - μ² loses
    digits the 1e-3 agreement needs. Traced and off the CPU: two passes, like the
    formula, the mean and then the squared deviations. On the CPU: one pass, in
    cache-sized pieces, over the deviations d from a close estimate of the mean (that
    of every 64th row): E[d²] - E[d]² then subtracts a square far below σ², and keeps
    the digits.
    """
    count = x.numel()
    if _tracing():
        mean = _staged_sum(x) / count + pending.mean()
        return mean, torch.sqrt(_staged_sum((x + (pending - mean)).square()) / count + NORM_EPS)
    flat = x.reshape(-1, x.shape[-1])
    if x.device.type != "cpu":
        mean = flat.sum(dtype=torch.float32) / count + pending.mean()
        total = (flat + (pending - mean)).square().sum(dtype=torch.float32)
        return mean, torch.sqrt(total / count + NORM_EPS)
    estimate = flat[::64].float().mean() + pending.mean()
    offset = pending - estimate
    buffer = torch.empty(min(_STATS_ROWS, flat.shape[0]), flat.shape[1])
    sums, squares = torch.zeros(()), torch.zeros(())
    for part in flat.split(_STATS_ROWS):
        deviation = torch.add(part, offset, out=buffer[: part.shape[0]]).view(-1)
        sums += deviation.sum()
        squares += deviation.square_().sum()
    shift = sums / count
    return estimate + shift, torch.sqrt(squares / count - shift.square() + NORM_EPS)


class DenseEncoder(nn.Module):
    """The shared encoder (docs/network.md#shared-encoder): three dense 3×3 layers; output is
    concat(X0, e1, e2, e3), 98 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(2 + 32 * i, 32, 3) for i in range(3))

    def forward(self, x0: Tensor, swap: bool = False) -> Tensor:
        """N×H×W×2 → N×H×W×98.

        `swap` computes the same F from x0's two channels in the other order (each layer's
        weights permuted to match, F's first two channels swapped back): the recomputation
        for an exported decoder, which a runtime's common-subexpression pass would otherwise
        merge with the first computation, and so hold F after all.
        """
        order = [1, 0] if swap else [0, 1]
        features = x0[..., order] if swap else x0
        for conv in self.convs:
            weight = conv.weight
            if swap:
                weight = torch.cat([weight[:, order], weight[:, 2:]], dim=1)
            new = _reflect_conv(features, weight, conv.bias).relu_()
            features = torch.cat([features, new], dim=-1)
        return torch.cat([features[..., order], features[..., 2:]], dim=-1) if swap else features

    def rows(self, x0: Tensor, first: int, last: int) -> Tensor:
        """F's image rows first..last-1 (1×rows×W×98) from the rows of x0 (1×H×W×2) they
        depend on: each 3×3 layer reaches one row further each way, and only the image's
        edges are reflected (_reflect_conv_rows)."""
        h = x0.shape[1]
        top, bottom = max(first - len(self.convs), 0), min(last + len(self.convs), h)
        features = x0[:, top:bottom]
        for conv in self.convs:
            at_top, at_bottom = top == 0, bottom == h
            new = _reflect_conv_rows(features, conv.weight, conv.bias, 1, at_top, at_bottom)
            cut_top, cut_bottom = int(not at_top), int(not at_bottom)
            features = features[:, cut_top : features.shape[1] - cut_bottom]
            features = torch.cat([features, new.relu_()], dim=-1)
            top, bottom = top + cut_top, bottom - cut_bottom
        return features[:, first - top : last - top]


class _FeatureRows(NamedTuple):
    """The encoder's F of one sample, computed anew a band of rows at a time wherever it is
    read (the embeddings, then the decoder), instead of one full-size map held through the
    transformer: eagerly on the CPU, where that map is a quarter of the peak memory."""

    encoder: DenseEncoder
    x0: Tensor  # the network's 1×H×W×2 input

    @property
    def band(self) -> int:
        """Image rows per band: as many pixels as two bands of the streams' steps."""
        return max(WINDOW, 2 * _BAND_ROWS // self.x0.shape[2])

    def spans(self, rows: int) -> list[tuple[int, int]]:
        """(first, last) of each band of `rows` rows, in order."""
        return [(first, min(first + self.band, rows)) for first in range(0, rows, self.band)]

    def __call__(self, first: int, last: int) -> Tensor:
        return self.encoder.rows(self.x0, first, last)


class RevisedLayerNorm(nn.Module):
    """Step 1 of a block (docs/network.md#step-1-revised-layer-norm): whole-sample
    normalisation that also yields the rescale (r) and shift (t)."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(1, DIM, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, DIM, 1, 1))
        self.a1 = nn.Parameter(torch.ones(1, DIM, 1, 1))
        self.c1 = nn.Parameter(torch.zeros(1, DIM, 1, 1))
        self.a2 = nn.Parameter(torch.ones(1, DIM, 1, 1))
        self.c2 = nn.Parameter(torch.zeros(1, DIM, 1, 1))

    def forward(self, x: Tensor, pending: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """For one sample x + pending: (scale, offset, r, t), per channel, with
        normalised = x · scale + offset, so the normalisation folds into the next 1×1 weights
        instead of costing a pass over the map."""
        mean, std = _moments(x, pending)
        scale = self.gamma.flatten() / std
        offset = (pending - mean) * scale + self.beta.flatten()
        rescale = self.a1.flatten() * std + self.c1.flatten()
        shift = self.a2.flatten() * mean + self.c2.flatten()
        return scale, offset, rescale, shift


def relative_position_input(window: int = WINDOW) -> Tensor:
    """The MLP input g = sign(d)·ln(1 + |d|) for every token pair of a window (64×64×2)."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()], dim=-1).float()  # row-major tokens
    d = coords[:, None, :] - coords[None, :, :]
    return torch.sign(d) * torch.log1p(d.abs())


class RelativePositionBias(nn.Module):
    """Step 4 of a block (docs/network.md#step-4-relative-position-bias): per-head additive
    attention bias, shared by both streams of a block."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2, 256), nn.ReLU(), nn.Linear(256, HEADS))
        self.register_buffer("g", relative_position_input(), persistent=False)

    def forward(self) -> Tensor:
        """1 × heads × 64 × 64: four dimensions, which the fused attention kernels accept."""
        return self.mlp(self.g).permute(2, 0, 1)[None].contiguous()


class StreamParams(nn.Module):
    """Everything one stream (I or M) of a block owns (docs/network.md#one-block).

    A stream's map x is updated in place and travels with a per-channel
    `pending` bias: the stream's value is x + pending.
    """

    def __init__(self) -> None:
        super().__init__()
        self.norm = RevisedLayerNorm()
        self.v = nn.Conv2d(DIM, DIM, 1)
        self.qk = nn.Conv2d(DIM, 2 * DIM, 1)
        self.local = nn.Conv2d(DIM, DIM, 5, groups=DIM)
        self.proj = nn.Conv2d(DIM, DIM, 1)
        self.mlp = nn.Sequential(nn.Conv2d(DIM, 2 * DIM, 1), nn.ReLU(), nn.Conv2d(2 * DIM, DIM, 1))

    def fold(self, x: Tensor, pending: Tensor, with_queries: bool) -> Folded:
        """Steps 1-2 as weights: the stream's layer norm of x + pending folded into its Q/K
        and V projections (1×1 weights and biases that take x itself), and r, t.

        The Q/K pair is Q and K stacked (2·98 outputs), or K alone without queries.
        """
        scale, offset, rescale, shift = self.norm(x, pending)
        first = 0 if with_queries else DIM
        qk_weight, qk_bias = self.qk.weight.flatten(1)[first:], self.qk.bias[first:]
        v_weight = self.v.weight.flatten(1)
        return Folded(
            (qk_weight * scale, qk_bias + qk_weight @ offset),
            (v_weight * scale, self.v.bias + v_weight @ offset),
            rescale,
            shift,
        )

    def project(self, x: Tensor, folded: Folded) -> list[Tensor]:
        """Traced: the [Q,] K maps, one product each (a runtime then holds K only from when
        it is needed), with the attention's scale 1/√49 folded into Q."""
        weight, bias = folded.qk
        if len(bias) > DIM:
            factor = torch.ones_like(bias)
            factor[:DIM] = HEAD_DIM**-0.5
            weight, bias = weight * factor[:, None], bias * factor
        parts = zip(weight.chunk(len(bias) // DIM), bias.chunk(len(bias) // DIM), strict=True)
        return [_linear(x, w, b) for w, b in parts]

    def local_branch(self, v: Tensor) -> Tensor:
        """Step 7's local branch: the 5×5 depthwise convolution of V."""
        return _reflect_conv(v, self.local.weight, self.local.bias, groups=DIM)

    def local_branch_rows(self, v: Tensor, top: bool, bottom: bool) -> Tensor:
        """Some rows of the local branch, from V of those rows and their margins (see
        _reflect_conv_rows)."""
        return _reflect_conv_rows(v, self.local.weight, self.local.bias, DIM, top, bottom)

    def finish_weights(self, pending: Tensor, folded: Folded) -> Finish:
        """Steps 8-9 as weights that take x itself: the projection with the modulation r, t
        folded in, the MLP with the pending bias folded into its first layer."""
        # proj(z)·r + t = (r ⊙ Wp) z + (r ⊙ bp + t)
        projection = self.proj.weight.flatten(1) * folded.rescale[:, None]
        pending = pending + self.proj.bias * folded.rescale + folded.shift
        w1, w2 = self.mlp[0].weight.flatten(1), self.mlp[2].weight.flatten(1)
        b1 = self.mlp[0].bias + w1 @ pending
        return Finish(projection, w1, b1, w2, pending + self.mlp[2].bias)


def _finish_rows(rows: Tensor, branches: Tensor, weights: Finish) -> None:
    """Steps 7-9 on rows of a stream's H·W×98 map, in place, given the same rows of the sum of
    the local branch and the attention: projection, modulation, residuals and MLP. Every step
    is per pixel, so any set of rows can be finished on its own."""
    _accumulate(rows, branches, weights.projection)
    _accumulate(rows, _linear(rows, weights.w1, weights.b1, relu=True), weights.w2)


class Finish(NamedTuple):
    """A stream's steps 8-9 as weights (StreamParams.finish_weights), and the pending bias
    the stream's map carries after them."""

    projection: Tensor
    w1: Tensor
    b1: Tensor
    w2: Tensor
    pending: Tensor


class Folded(NamedTuple):
    """A stream's projections with its layer norm folded in (StreamParams.fold)."""

    qk: tuple[Tensor, Tensor]
    v: tuple[Tensor, Tensor]
    rescale: Tensor
    shift: Tensor


def _window_padding(size: int, shift: int) -> tuple[int, int]:
    """Reflection padding (before, after) of one axis for the window layout of step 3
    (docs/network.md#step-3-window-layout)."""
    pad = (WINDOW - size % WINDOW) % WINDOW
    if shift == 0:
        return 0, pad
    return shift, (WINDOW - shift + pad) % WINDOW


def _reflect_index(index: Tensor, size: int) -> Tensor:
    """The source position of each padded position under reflection (no edge repeat)."""
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


@functools.lru_cache(maxsize=8)
def _window_indices(h: int, w: int, shift: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Index maps between an H×W map and the 8×8 windows of a block with this shift.

    gather[b·64 + t] is the pixel y·W + x that token t of window b reads, the
    block's reflection padding included (step 3); scatter[y·W + x] is
    the token b·64 + t that holds pixel (y, x): it undoes the windows and crops
    the padding (step 6). One row gather each way replaces padding, permuting
    and cropping copies of the whole map.
    """
    top, bottom = _window_padding(h, shift)
    left, right = _window_padding(w, shift)
    columns = (w + left + right) // WINDOW  # windows per row
    size = WINDOW * WINDOW
    # Flat index arithmetic only (no reshapes, no remainder by a size), so that an ONNX
    # export keeps H and W symbolic.
    token = torch.arange((h + top + bottom) // WINDOW * columns * size, device=device)
    window, inside = token // size, token % size
    y = window // columns * WINDOW + inside // WINDOW - top
    x = (window - window // columns * columns) * WINDOW + inside % WINDOW - left
    gather = _reflect_index(y, h) * w + _reflect_index(x, w)
    pixel = torch.arange(h * w, device=device)
    y = pixel // w
    y, x = y + top, pixel - y * w + left
    scatter = (y // WINDOW * columns + x // WINDOW) * size + y % WINDOW * WINDOW + x % WINDOW
    return gather, scatter


class _Band(NamedTuple):
    """A band of whole window rows, the unit of a stream's eager steps 2-9."""

    gather: Tensor  # the pixel (H·W row) each token of the band reads
    pixels: slice  # the H·W rows the band gives back: whole image rows
    order: Tensor  # the token of the band that holds each of those pixels
    slab: tuple[int, int]  # the image rows the band reads: its tokens and the local margin
    slab_gather: Tensor  # gather, counted from the slab's first pixel
    settled: int  # no band from this one on reads an image row above this one


# Image rows beyond its own that a band's local branch (the 5×5 convolution) reads on each side.
_LOCAL_MARGIN = 2


@functools.lru_cache(maxsize=8)
def _window_bands(h: int, w: int, shift: int, device: torch.device) -> list[_Band]:
    """The windows of a block in bands of whole window rows (one band off the CPU), for a
    stream's eager steps a band at a time: the slab of image rows the band reads (the pixels
    its tokens gather, the reflection padding included, and the local branch's margin) and the
    first row any later band still reads, above which finished rows may be written."""
    # Made on the CPU, where the rows each band reads can be looked at, then moved.
    gather, scatter = _window_indices(h, w, shift, torch.device("cpu"))
    top, _ = _window_padding(h, shift)
    left, right = _window_padding(w, shift)
    per_row = (w + left + right) // WINDOW * WINDOW * WINDOW  # tokens in a row of windows
    window_rows = len(gather) // per_row
    rows_per_band = max(1, _BAND_ROWS // per_row) if device.type == "cpu" else window_rows
    parts = []
    for first in range(0, window_rows, rows_per_band):
        last = min(first + rows_per_band, window_rows)
        tokens = gather[first * per_row : last * per_row]
        y0, y1 = max(first * WINDOW - top, 0), min(last * WINDOW - top, h)
        read = (int(tokens.min()) // w, int(tokens.max()) // w + 1)
        slab_top = max(min(y0 - _LOCAL_MARGIN, read[0]), 0)
        slab_bottom = min(max(y1 + _LOCAL_MARGIN, read[1]), h)
        pixels = slice(y0 * w, y1 * w)
        order = scatter[pixels] - first * per_row
        parts.append((tokens, pixels, order, (slab_top, slab_bottom)))
    bands, settled = [], h
    for tokens, pixels, order, slab in reversed(parts):
        settled = min(settled, slab[0])
        local = (tokens - slab[0] * w).to(device)
        bands.append(_Band(tokens.to(device), pixels, order.to(device), slab, local, settled))
    return bands[::-1]


def _heads(tokens: Tensor) -> Tensor:
    """Tokens×98 (window-major, head-major channels) → windows×heads×64×49, a strided view."""
    return tokens.view(-1, WINDOW * WINDOW, HEADS, HEAD_DIM).transpose(1, 2)


def _to_windows(x: Tensor, gather: Tensor) -> tuple[Tensor, ...]:
    """1×H×W×(k·98) → k tensors windows×heads×64×49, strided views of one gathered copy.

    Tokens are row-major within a window, channels head-major within Q, K, V.
    """
    c = x.shape[-1]
    tokens = x.view(-1, c).index_select(0, gather)
    tokens = tokens.view(-1, WINDOW * WINDOW, c // HEAD_DIM, HEAD_DIM).transpose(1, 2)
    return (tokens,) if c == DIM else tokens.split(HEADS, dim=1)


def _from_windows(x: Tensor, scatter: Tensor, h: int, w: int) -> Tensor:
    """Attention output windows×heads×64×49 → the 1×H×W×98 map (inverse of _to_windows)."""
    tokens = x.transpose(1, 2).reshape(-1, DIM)
    return tokens.index_select(0, scatter).view(1, h, w, DIM)


class InteractionBlock(nn.Module):
    """One block (docs/network.md#one-block) with its M stream and, for block 0, its I stream.

    Eagerly, each stream's attention runs a band of windows at a time (_attend): its Q, K
    and V windows exist a band at a time, gathered from x and V, and the band's output is
    added straight into the local branch's map. Traced (_stream), whole-map steps make
    the smaller graph, arranged for ONNX Runtime's memory (see the module's docstring).
    """

    def __init__(self, shift: int, with_stream_i: bool) -> None:
        super().__init__()
        self.shift = shift
        self.position = RelativePositionBias()
        self.stream_m = StreamParams()
        self.stream_i = StreamParams() if with_stream_i else None

    @staticmethod
    def _run_bands(
        params: StreamParams,
        x: Tensor,
        folded: Folded,
        weights: Finish,
        bands: list[_Band],
        bias: Tensor,
        queries: tuple[Tensor, Tensor, Tensor] | None,
    ) -> None:
        """Eager steps 2-9 of one stream, x updated in place a band at a time: V of the band's
        slab, its local branch, the attention of its windows and the per-pixel steps, so that
        no V, branch or window map of the whole image exists. `queries` (a map and the 1×1
        weight and bias that make queries of it) replaces the stream's own queries (stream I
        of block 0 takes M's).

        A band's rows are finished (written in place) once no later band reads them: a band
        reads its slab, which reaches up to the local branch's margin and, at the bottom
        edge, to the rows the reflection padding repeats.
        """
        h, w = x.shape[1:3]
        rows = x.view(-1, DIM)
        waiting: list[tuple[slice, Tensor]] = []
        for band in bands:
            while waiting and waiting[0][0].stop <= band.settled * w:
                pixels, branches = waiting.pop(0)
                _finish_rows(rows[pixels], branches, weights)
            top, bottom = band.slab
            slab = x[:, top:bottom]
            v = _linear(slab, *folded.v)
            y0, y1 = band.pixels.start // w, band.pixels.stop // w
            near = v[:, max(y0 - _LOCAL_MARGIN, 0) - top : min(y1 + _LOCAL_MARGIN, h) - top]
            branches = params.local_branch_rows(near, y0 == 0, y1 == h).view(-1, DIM)
            qk = _linear(slab.reshape(-1, DIM).index_select(0, band.slab_gather), *folded.qk)
            if queries is None:
                q, k = qk[:, :DIM], qk[:, DIM:]
            else:
                source, weight, q_bias = queries
                q = _linear(source.view(-1, DIM).index_select(0, band.gather), weight, q_bias)
                k = qk
            values = v.view(-1, DIM).index_select(0, band.slab_gather)
            attended = F.scaled_dot_product_attention(
                _heads(q), _heads(k), _heads(values), attn_mask=bias
            )
            # The fused CPU kernel stores its output as windows×64×heads×49: this
            # transposition back to tokens×98 is free there (elsewhere it copies).
            branches += attended.transpose(1, 2).reshape(-1, DIM).index_select(0, band.order)
            waiting.append((band.pixels, branches))
        for pixels, branches in waiting:
            _finish_rows(rows[pixels], branches, weights)

    def _stream(
        self,
        params: StreamParams,
        x: Tensor,
        pending: Tensor,
        windows: tuple[Tensor, Tensor],
        bias: Tensor,
        queries: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Traced steps 1-9 for one stream, x updated in place: (its new pending bias, the
        windowed queries it used). `queries` replaces the stream's own (stream I of block 0
        takes M's). Each intermediate map is dropped once used, which bounds the peak memory."""
        gather, scatter = windows
        folded = params.fold(x, pending, with_queries=queries is None)
        qk = params.project(x, folded)
        v = _linear(x, *folded.v)
        *own, keys = (windows for part in qk for windows in _to_windows(part, gather))
        del qk
        (values,) = _to_windows(v, gather)
        queries = own[0] if queries is None else queries
        local = params.local_branch(v)  # traced first: ONNX Runtime's walk then runs it last
        out = (queries @ keys.transpose(-1, -2) + bias).softmax(-1) @ values
        del own, keys, values
        local += _from_windows(out, scatter, x.shape[1], x.shape[2])
        del out
        weights = params.finish_weights(pending, folded)
        _finish_rows(x.view(-1, DIM), local.view(-1, DIM), weights)
        return weights.pending, queries

    def forward(
        self, m: Tensor, pending_m: Tensor, i: Tensor | None = None, pending_i: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Update the 1×H×W×98 maps m (and i) in place; return their new pending biases.

        With shift 0, stream I attends with M's queries (docs/network.md#step-5-attention).
        """
        _, h, w, _ = m.shape
        bias = self.position().to(m.dtype)
        with_i = self.stream_i is not None and i is not None and pending_i is not None
        if _tracing():
            windows = _window_indices.__wrapped__(h, w, self.shift, m.device)
            # Stream M is finished before stream I starts (I reads only i and M's queries),
            # so the two streams' intermediate maps are never alive together.
            pending_m, queries = self._stream(self.stream_m, m, pending_m, windows, bias)
            if with_i:
                shared = queries if self.shift == 0 else None
                pending_i, _ = self._stream(self.stream_i, i, pending_i, windows, bias, shared)
            return pending_m, pending_i
        bands = _window_bands(h, w, self.shift, m.device)
        folded_m = self.stream_m.fold(m, pending_m, with_queries=True)
        if with_i:
            # Stream I first, while m is still the map M's queries are made of (again, from
            # M's weights).
            (weight, q_bias), shared = folded_m.qk, self.shift == 0
            queries = (m, weight[:DIM], q_bias[:DIM]) if shared else None
            folded_i = self.stream_i.fold(i, pending_i, with_queries=not shared)
            finish_i = self.stream_i.finish_weights(pending_i, folded_i)
            self._run_bands(self.stream_i, i, folded_i, finish_i, bands, bias, queries)
            pending_i = finish_i.pending
        finish_m = self.stream_m.finish_weights(pending_m, folded_m)
        self._run_bands(self.stream_m, m, folded_m, finish_m, bands, bias, None)
        return finish_m.pending, pending_i


def _grid_padding(size: int) -> int:
    """Rows or columns the transformer adds to F by reflection, up to a multiple of 4."""
    return (4 - size % 4) % 4


class InteractionTransformer(nn.Module):
    """The interaction transformer (docs/network.md#interaction-transformer): two streams, two
    blocks, output G from stream M."""

    def __init__(self) -> None:
        super().__init__()
        self.embed_i = nn.Conv2d(DIM, DIM, 3)
        self.embed_m = nn.Conv2d(DIM, DIM, 3)
        self.block0 = InteractionBlock(shift=0, with_stream_i=True)
        self.block1 = InteractionBlock(shift=WINDOW // 2, with_stream_i=False)
        self.mix0 = nn.Parameter(torch.zeros(1))
        self.unembed = nn.Conv2d(DIM, DIM, 3)

    def forward(self, f: Tensor | _FeatureRows) -> tuple[Tensor, Tensor]:
        """F (N×H×W×98, or made a band of rows at a time) → (stream M before the unembedding,
        on the grid padded to multiples of 4, and its pending bias). The decoder folds its
        first layer into the unembedding."""
        if isinstance(f, _FeatureRows):
            m, i = self._embed_rows(f)
        else:
            h, w = f.shape[1:3]
            f = _pad(f, 0, _grid_padding(h), 0, _grid_padding(w))
            m = _reflect_conv(f, self.embed_m.weight, self.embed_m.bias)
            i = _reflect_conv(f, self.embed_i.weight, self.embed_i.bias)
            del f  # where the grid was padded, a copy the blocks need not keep
        zero = torch.zeros(DIM, device=m.device)
        pending_m, pending_i = self.block0(m, zero, i, zero)
        assert pending_i is not None  # block 0 has stream I
        m.addcmul_(i, self.mix0.to(m.dtype))  # M' + w·I'
        pending_m, _ = self.block1(m, pending_m + self.mix0 * pending_i)
        return m, pending_m

    def _embed_rows(self, f: _FeatureRows) -> tuple[Tensor, Tensor]:
        """The two embeddings of F's grid padded to multiples of 4, a band of rows at a time
        from the rows of F each band reads (one row more each way, reflected past the
        image's bottom)."""
        _, h, w, _ = f.x0.shape
        grid_h, grid_w = h + _grid_padding(h), w + _grid_padding(w)
        m = f.x0.new_empty(1, grid_h, grid_w, DIM)
        i = torch.empty_like(m)
        for first, last in f.spans(grid_h):
            top, bottom = max(first - 1, 0), min(last + 1, grid_h)
            if bottom <= h:
                rows = f(top, bottom)
            else:  # rows of the padded grid past the image: reflections of its last rows
                source = _reflect_index(torch.arange(top, bottom), h)
                low = int(source.min())
                rows = f(low, int(source.max()) + 1)
                rows = rows.index_select(1, (source - low).to(rows.device))
            rows = _pad(rows, 0, 0, 0, grid_w - w)
            at_top, at_bottom = first == 0, last == grid_h
            for conv, out in ((self.embed_m, m), (self.embed_i, i)):
                out[:, first:last] = _reflect_conv_rows(
                    rows, conv.weight, conv.bias, 1, at_top, at_bottom
                )
        return m, i


class FusionDecoder(nn.Module):
    """The fusion decoder (docs/network.md#fusion-decoder): complementary-feature MLP, then four
    reflect-padded 3×3 layers."""

    def __init__(self) -> None:
        super().__init__()
        self.squeeze = nn.Sequential(
            nn.Conv2d(2 * DIM, DIM, 1, bias=False), nn.ReLU(), nn.Conv2d(DIM, 128, 1, bias=False)
        )
        self.convs = nn.ModuleList(
            nn.Conv2d(cin, cout, 3) for cin, cout in ((128, 64), (64, 32), (32, 16), (16, 1))
        )

    def complement(
        self, f: Tensor | _FeatureRows, m: Tensor, pending: Tensor, unembed: nn.Conv2d
    ) -> Tensor:
        """The complementary-feature MLP's first layer and its ReLU: F (N×H×W×98, or made a
        band of rows at a time), stream M with its pending bias and the unembedding layer →
        N×H×W×98.

        squeeze.0 on concat(F, G) is W_F·F + W_G·G; W_G is folded into the unembedding
        (both linear, G is never stored). A step of its own so that the caller can drop F
        and M before the 3×3 layers run.
        """
        h, w = (f.x0 if isinstance(f, _FeatureRows) else f).shape[1:3]
        on_f, on_g = self.squeeze[0].weight.flatten(1).split(DIM, dim=1)
        # conv(pad(m + pending)) = conv(pad(m)) + Σ_taps W·pending: padding copies pixels.
        g_bias = unembed.bias + unembed.weight.sum(dim=(2, 3)) @ pending
        weight = torch.einsum("oj,jcyx->ocyx", on_g, unembed.weight)
        g = _crop(_reflect_conv(m, weight, on_g @ g_bias), h, w)
        if _tracing():
            z = _linear(f, on_f, None) + g
        else:  # F's part written into G's map by the product: one map fewer at the peak
            z = g.contiguous()  # a copy only where the transformer padded the grid
            del g
            if isinstance(f, _FeatureRows):
                for first, last in f.spans(h):
                    _accumulate(z[:, first:last], f(first, last), on_f)
            else:
                _accumulate(z, f, on_f)
        return z.relu_()

    def forward(self, z: Tensor) -> Tensor:
        """The complement's output → N×H×W×1: squeeze.2 folded into the first of the four
        reflect-padded 3×3 layers."""
        first, *middle, last = self.convs
        weight = torch.einsum("omyx,mc->ocyx", first.weight, self.squeeze[2].weight.flatten(1))
        z = _reflect_conv(z, weight, first.bias).relu_()
        for conv in middle:
            z = _reflect_conv(z, conv.weight, conv.bias).relu_()
        z = _reflect_conv(z, last.weight, last.bias).float()
        return torch.tanh(z) / 2 + 0.5


class GIFNet(nn.Module):
    """GIFNet inference: forward(first, second) → fused luminance, all N×1×H×W in [0, 1].

    `first` is the thermal / NIR / PET / near-focus image, `second` the visible
    luminance. Any H, W ≥ 8; each sample of a batch is fused independently.
    Under torch.autocast the network computes in the autocast dtype (the
    layer-norm statistics and the output stay float32); otherwise in the
    inputs' dtype.
    """

    def __init__(self) -> None:
        super().__init__()
        self.encoder = DenseEncoder()
        self.transformer = InteractionTransformer()
        self.decoder = FusionDecoder()

    def forward(self, first: Tensor, second: Tensor) -> Tensor:
        if first.shape != second.shape or first.dim() != 4 or first.shape[1] != 1:
            raise ValueError(
                f"GIFNet takes two N×1×H×W tensors of one shape, got {tuple(first.shape)} "
                f"and {tuple(second.shape)}"
            )
        if min(first.shape[-2:]) < MIN_SIZE:
            raise ValueError(
                f"GIFNet needs H and W of at least {MIN_SIZE}, got {tuple(first.shape[-2:])}"
            )
        device, dtype = first.device.type, first.dtype
        # The casts are explicit inside; autocast would also re-cast the in-place products.
        # Devices without autocast (e.g. "meta", used to count FLOPs) run in the input dtype.
        context: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
        if torch.amp.is_autocast_available(device):
            if torch.is_autocast_enabled(device):
                dtype = torch.get_autocast_dtype(device)
            context = torch.autocast(device, enabled=False)
        with context:
            pairs = zip(first, second, strict=True)
            fused = [self._fuse(a[None], b[None], dtype) for a, b in pairs]
        return torch.cat(fused)

    def _fuse(self, first: Tensor, second: Tensor, dtype: torch.dtype) -> Tensor:
        """One sample: the layer norm's statistics are per sample, and so are its folded weights."""
        x0 = torch.cat([first, second], dim=1).to(dtype).permute(0, 2, 3, 1).contiguous()
        in_bands = x0.device.type == "cpu" and not _tracing()
        f = _FeatureRows(self.encoder, x0) if in_bands else self.encoder(x0)
        m, pending = self.transformer(f)
        if _tracing():  # the decoder's F computed again rather than held through the transformer
            f = self.encoder(x0, swap=True)
        z = self.decoder.complement(f, m, pending, self.transformer.unembed)
        del f, m  # the 3×3 layers need neither: two maps fewer at their peak
        out = self.decoder(z)
        return out.view(1, 1, *out.shape[1:3])


# --- checkpoint mapping ---------------------------------------------------------------------

_SWIN = "extractor_multask.SwinTransformerSpecific."
# Checkpoint entries that inference does not use (docs/network.md#checkpoint).
_UNUSED_PREFIXES = (
    "decoder_rec.",
    _SWIN + "layer1.weights.",
    _SWIN + "layer1.weights_mfif.1",
    _SWIN + "layer1.blocks.1.norm1.",
    _SWIN + "layer1.blocks.1.attn.conv.",
    _SWIN + "layer1.blocks.1.attn.V.",
    _SWIN + "layer1.blocks.1.attn.proj.",
    _SWIN + "layer1.blocks.1.attn.QK.",
    _SWIN + "layer1.blocks.1.mlp.",
)
_UNUSED_SUFFIXES = ("attn.attn.relative_positions",)  # recomputed: relative_position_input()


def _stream_keys(src: str, dst: str, suffix: str) -> dict[str, str]:
    """Checkpoint → module names for one stream; suffix is "_mfif" for M, "" for I."""
    return {
        f"{src}norm1{suffix}.weight": f"{dst}norm.gamma",
        f"{src}norm1{suffix}.bias": f"{dst}norm.beta",
        f"{src}norm1{suffix}.meta1.weight": f"{dst}norm.a1",
        f"{src}norm1{suffix}.meta1.bias": f"{dst}norm.c1",
        f"{src}norm1{suffix}.meta2.weight": f"{dst}norm.a2",
        f"{src}norm1{suffix}.meta2.bias": f"{dst}norm.c2",
        f"{src}attn.V{suffix}.weight": f"{dst}v.weight",
        f"{src}attn.V{suffix}.bias": f"{dst}v.bias",
        f"{src}attn.QK{suffix}.weight": f"{dst}qk.weight",
        f"{src}attn.QK{suffix}.bias": f"{dst}qk.bias",
        f"{src}attn.conv{suffix}.weight": f"{dst}local.weight",
        f"{src}attn.conv{suffix}.bias": f"{dst}local.bias",
        f"{src}attn.proj{suffix}.weight": f"{dst}proj.weight",
        f"{src}attn.proj{suffix}.bias": f"{dst}proj.bias",
        f"{src}mlp{suffix}.mlp.0.weight": f"{dst}mlp.0.weight",
        f"{src}mlp{suffix}.mlp.0.bias": f"{dst}mlp.0.bias",
        f"{src}mlp{suffix}.mlp.2.weight": f"{dst}mlp.2.weight",
        f"{src}mlp{suffix}.mlp.2.bias": f"{dst}mlp.2.bias",
    }


def checkpoint_key_map() -> dict[str, str]:
    """Map every checkpoint key that inference uses to this module's parameter name."""
    keys: dict[str, str] = {}
    for i in range(3):
        for p in ("weight", "bias"):
            keys[f"getSharedFeatures.conv_{i + 1}.conv2d.{p}"] = f"encoder.convs.{i}.{p}"
    for p in ("weight", "bias"):
        keys[f"{_SWIN}patch_embed_ivif.proj.{p}"] = f"transformer.embed_i.{p}"
        keys[f"{_SWIN}patch_embed_mfif.proj.{p}"] = f"transformer.embed_m.{p}"
        keys[f"{_SWIN}patch_unembed.proj.0.{p}"] = f"transformer.unembed.{p}"
    keys[f"{_SWIN}layer1.weights_mfif.0"] = "transformer.mix0"
    for b in (0, 1):
        src = f"{_SWIN}layer1.blocks.{b}."
        dst = f"transformer.block{b}."
        for p in ("0.weight", "0.bias", "2.weight", "2.bias"):
            keys[f"{src}attn.attn.meta.{p}"] = f"{dst}position.mlp.{p}"
        keys.update(_stream_keys(src, dst + "stream_m.", "_mfif"))
        if b == 0:
            keys.update(_stream_keys(src, dst + "stream_i.", ""))
    keys["cnnDecoder.fuseComplementFeatures.mlp.0.weight"] = "decoder.squeeze.0.weight"
    keys["cnnDecoder.fuseComplementFeatures.mlp.2.weight"] = "decoder.squeeze.2.weight"
    for i, layer in enumerate((1, 4, 7, 10)):
        for p in ("weight", "bias"):
            keys[f"cnnDecoder.decoder.{layer}.{p}"] = f"decoder.convs.{i}.{p}"
    return keys


def _is_unused(key: str) -> bool:
    return key.startswith(_UNUSED_PREFIXES) or key.endswith(_UNUSED_SUFFIXES)


def convert_state_dict(
    checkpoint: Mapping[str, Tensor], source: str = "checkpoint"
) -> dict[str, Tensor]:
    """Rename a GIFNet checkpoint to this module's names, checking every shape.

    Raises WeightsError (one line) on a missing key, an unknown key or a
    shape that differs from the network's, naming the key.
    """
    model_shapes = {k: v.shape for k, v in GIFNet().state_dict().items()}
    mapping = checkpoint_key_map()
    missing = [k for k in mapping if k not in checkpoint]
    if missing:
        raise WeightsError(f"{source}: {len(missing)} GIFNet tensors missing, first {missing[0]!r}")
    unknown = [k for k in checkpoint if k not in mapping and not _is_unused(k)]
    if unknown:
        raise WeightsError(f"{source}: unexpected tensor {unknown[0]!r} ({len(unknown)} unknown)")
    converted: dict[str, Tensor] = {}
    for src, dst in mapping.items():
        tensor = checkpoint[src]
        want = model_shapes[dst]
        # The norm's per-channel vectors are stored as 1×C×1×1, C×1×1×1 or C: only their
        # size matters. Every other tensor must have exactly the network's shape.
        reshapeable = ".norm." in dst and tensor.numel() == math.prod(want)
        if tensor.shape != want and not reshapeable:
            raise WeightsError(
                f"{source}: tensor {src!r} has shape {tuple(tensor.shape)}, expected {tuple(want)}"
            )
        converted[dst] = tensor.reshape(want)
    return converted


def load_model(
    weights: str | Path | None = None, device: str | torch.device = "cpu", verify_hash: bool = True
) -> GIFNet:
    """Build GIFNet in eval mode with the authors' checkpoint on `device`.

    `weights` follows the precedence of weights.resolve_weights (argument,
    GIFNET_WEIGHTS, per-user cache). The checkpoint's SHA-256 is checked unless
    verify_hash is False (for fine-tuned checkpoints).
    """
    checkpoint = load_state_dict(weights, verify_hash=verify_hash)
    model = GIFNet()
    model.load_state_dict(convert_state_dict(checkpoint, str(weights or "checkpoint")))
    model.eval().requires_grad_(False)
    return model.to(device)
