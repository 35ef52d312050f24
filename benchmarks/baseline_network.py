"""Benchmark baseline: the plain eager fp32 GIFNet, written literally from its specification
(docs/network.md, whose section names and step numbers the docstrings below use).

Its code is that of the network's module classes at commit eff1c6c (gifnet_ros/network.py
there), the first version, before any optimisation: a fixed reference point, so that
benchmarks/model_speed.py can time the optimised network (gifnet_ros/models/gifnet.py)
against it side by side in one process. It loads the same checkpoint through
gifnet_ros.models.gifnet.convert_state_dict, whose parameter names it shares. Nothing in the
package imports it.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional torch alias)
from torch import Tensor, nn

from gifnet_ros.models.gifnet import convert_state_dict
from gifnet_ros.models.weights import load_state_dict

WINDOW = 8
HEADS = 2
HEAD_DIM = 49
DIM = HEADS * HEAD_DIM  # 98 feature channels in the transformer
NORM_EPS = 1e-5


def _reflect(x: Tensor, left: int, right: int, top: int, bottom: int) -> Tensor:
    if left == right == top == bottom == 0:
        return x
    return F.pad(x, (left, right, top, bottom), mode="reflect")


class ReflectConv(nn.Conv2d):
    """A convolution that reflect-pads by k // 2 itself, as every k×k layer of GIFNet does."""

    def forward(self, x: Tensor) -> Tensor:
        p = self.kernel_size[0] // 2
        return super().forward(_reflect(x, p, p, p, p))


class DenseEncoder(nn.Module):
    """The shared encoder (docs/network.md#shared-encoder): three dense 3×3 layers; output is
    concat(X0, e1, e2, e3), 98 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(ReflectConv(2 + 32 * i, 32, 3) for i in range(3))

    def forward(self, x0: Tensor) -> Tensor:
        features = [x0]
        for conv in self.convs:
            features.append(torch.relu(conv(torch.cat(features, dim=1))))
        return torch.cat(features, dim=1)


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

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # Statistics in float32 even under autocast: they are whole-image sums.
        xf = x.float()
        mean = xf.mean(dim=(1, 2, 3), keepdim=True)
        std = torch.sqrt((xf - mean).pow(2).mean(dim=(1, 2, 3), keepdim=True) + NORM_EPS)
        normed = ((xf - mean) / std * self.gamma + self.beta).to(x.dtype)
        rescale = self.a1 * std + self.c1
        shift = self.a2 * mean + self.c2
        return normed, rescale, shift


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
        return self.mlp(self.g).permute(2, 0, 1).contiguous()  # heads × 64 × 64


class StreamParams(nn.Module):
    """Everything one stream (I or M) of a block owns (docs/network.md#one-block)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = RevisedLayerNorm()
        self.v = nn.Conv2d(DIM, DIM, 1)
        self.qk = nn.Conv2d(DIM, 2 * DIM, 1)
        self.local = ReflectConv(DIM, DIM, 5, groups=DIM)
        self.proj = nn.Conv2d(DIM, DIM, 1)
        self.mlp = nn.Sequential(nn.Conv2d(DIM, 2 * DIM, 1), nn.ReLU(), nn.Conv2d(2 * DIM, DIM, 1))

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Normalise and project: returns Q, K, V, r, t."""
        normed, rescale, shift = self.norm(x)
        q, k = self.qk(normed).chunk(2, dim=1)
        return q, k, self.v(normed), rescale, shift

    def finish(
        self, x: Tensor, v: Tensor, attended: Tensor, rescale: Tensor, shift: Tensor
    ) -> Tensor:
        """Steps 7-9: local branch, projection, modulation, residuals and MLP."""
        y = self.proj(self.local(v) + attended) * rescale + shift
        x = x + y
        return x + self.mlp(x)


def _window_padding(size: int, shift: int) -> tuple[int, int]:
    """Reflection padding (before, after) of one axis for the window layout of step 3
    (docs/network.md#step-3-window-layout)."""
    pad = (WINDOW - size % WINDOW) % WINDOW
    if shift == 0:
        return 0, pad
    return shift, (WINDOW - shift + pad) % WINDOW


def _to_windows(x: Tensor) -> Tensor:
    """N×C×Hp×Wp → (N·windows)×heads×64×49, tokens row-major, channels head-major."""
    n, _c, hp, wp = x.shape
    x = x.view(n, HEADS, HEAD_DIM, hp // WINDOW, WINDOW, wp // WINDOW, WINDOW)
    x = x.permute(0, 3, 5, 1, 4, 6, 2)  # n, wy, wx, head, y, x, d
    return x.reshape(-1, HEADS, WINDOW * WINDOW, HEAD_DIM)


def _from_windows(x: Tensor, n: int, hp: int, wp: int) -> Tensor:
    """Inverse of _to_windows."""
    x = x.view(n, hp // WINDOW, wp // WINDOW, HEADS, WINDOW, WINDOW, HEAD_DIM)
    x = x.permute(0, 3, 6, 1, 4, 2, 5)  # n, head, d, wy, y, wx, x
    return x.reshape(n, DIM, hp, wp)


class InteractionBlock(nn.Module):
    """One block (docs/network.md#one-block) with its M stream and, for block 0, its I stream."""

    def __init__(self, shift: int, with_stream_i: bool) -> None:
        super().__init__()
        self.shift = shift
        self.position = RelativePositionBias()
        self.stream_m = StreamParams()
        self.stream_i = StreamParams() if with_stream_i else None

    def _windows(self, tensors: list[Tensor]) -> tuple[list[Tensor], int, int]:
        """Pad Q/K/V maps together (they share the layout) and cut them into windows."""
        _n, _, h, w = tensors[0].shape
        top, bottom = _window_padding(h, self.shift)
        left, right = _window_padding(w, self.shift)
        stacked = _reflect(torch.cat(tensors, dim=1), left, right, top, bottom)
        hp, wp = stacked.shape[-2:]
        return [_to_windows(t) for t in stacked.split(DIM, dim=1)], hp, wp

    def _unwindow(self, x: Tensor, n: int, h: int, w: int, hp: int, wp: int) -> Tensor:
        s = self.shift
        return _from_windows(x, n, hp, wp)[:, :, s : s + h, s : s + w]

    def forward(self, m: Tensor, i: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        n, _, h, w = m.shape
        bias = self.position().to(m.dtype)
        qm, km, vm, rm, tm = self.stream_m.project(m)
        if self.stream_i is None or i is None:
            (qw, kw, vw), hp, wp = self._windows([qm, km, vm])
            out_m = F.scaled_dot_product_attention(qw, kw, vw, attn_mask=bias)
            m_new = self.stream_m.finish(m, vm, self._unwindow(out_m, n, h, w, hp, wp), rm, tm)
            return m_new, None
        qi, ki, vi, ri, ti = self.stream_i.project(i)
        (qmw, kmw, vmw, qiw, kiw, viw), hp, wp = self._windows([qm, km, vm, qi, ki, vi])
        # With shift 0, stream I attends with M's queries (docs/network.md#step-5-attention).
        queries_i = qmw if self.shift == 0 else qiw
        out_m = F.scaled_dot_product_attention(qmw, kmw, vmw, attn_mask=bias)
        out_i = F.scaled_dot_product_attention(queries_i, kiw, viw, attn_mask=bias)
        m_new = self.stream_m.finish(m, vm, self._unwindow(out_m, n, h, w, hp, wp), rm, tm)
        i_new = self.stream_i.finish(i, vi, self._unwindow(out_i, n, h, w, hp, wp), ri, ti)
        return m_new, i_new


class InteractionTransformer(nn.Module):
    """The interaction transformer (docs/network.md#interaction-transformer): two streams, two
    blocks, output G from stream M."""

    def __init__(self) -> None:
        super().__init__()
        self.embed_i = ReflectConv(DIM, DIM, 3)
        self.embed_m = ReflectConv(DIM, DIM, 3)
        self.block0 = InteractionBlock(shift=0, with_stream_i=True)
        self.block1 = InteractionBlock(shift=WINDOW // 2, with_stream_i=False)
        self.mix0 = nn.Parameter(torch.zeros(1))
        self.unembed = ReflectConv(DIM, DIM, 3)

    def forward(self, f: Tensor) -> Tensor:
        h, w = f.shape[-2:]
        f = _reflect(f, 0, (4 - w % 4) % 4, 0, (4 - h % 4) % 4)
        m, i = self.block0(self.embed_m(f), self.embed_i(f))
        m = m + self.mix0 * i
        m, _ = self.block1(m)
        return self.unembed(m)[:, :, :h, :w]


class FusionDecoder(nn.Module):
    """The fusion decoder (docs/network.md#fusion-decoder): complementary-feature MLP, then four
    reflect-padded 3×3 layers."""

    def __init__(self) -> None:
        super().__init__()
        self.squeeze = nn.Sequential(
            nn.Conv2d(2 * DIM, DIM, 1, bias=False), nn.ReLU(), nn.Conv2d(DIM, 128, 1, bias=False)
        )
        self.convs = nn.ModuleList(
            ReflectConv(cin, cout, 3) for cin, cout in ((128, 64), (64, 32), (32, 16), (16, 1))
        )

    def forward(self, f: Tensor, g: Tensor) -> Tensor:
        z = self.squeeze(torch.cat([f, g], dim=1))
        for conv in self.convs[:-1]:
            z = torch.relu(conv(z))
        return torch.tanh(self.convs[-1](z)) / 2 + 0.5


class GIFNet(nn.Module):
    """GIFNet inference: forward(first, second) → fused luminance, all N×1×H×W in [0, 1].

    `first` is the thermal / NIR / PET / near-focus image, `second` the visible
    luminance. Any H, W ≥ 8; each sample of a batch is fused independently.
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
        if min(first.shape[-2:]) < 8:
            raise ValueError(f"GIFNet needs H and W of at least 8, got {tuple(first.shape[-2:])}")
        f = self.encoder(torch.cat([first, second], dim=1))
        return self.decoder(f, self.transformer(f))


def load_baseline(weights: str | Path | None = None, verify_hash: bool = True) -> GIFNet:
    """The baseline network in eval mode on the CPU with the authors' checkpoint."""
    checkpoint = load_state_dict(weights, verify_hash=verify_hash)
    model = GIFNet()
    model.load_state_dict(convert_state_dict(checkpoint, str(weights or "checkpoint")))
    return model.eval().requires_grad_(False)
