"""The GIFNet inference network, written from the specification in ARCHITECTURE.md.

Only the path that produces the fused image is built: the shared dense
encoder, the interaction transformer (stream I of block 0 feeds stream M;
block 1's stream I is never used, so it does not exist here) and the fusion
decoder. The checkpoint's reconstruction decoder and "ivif" mixing weights are
recognised and ignored when loading.

This module imports no ROS: the engine, the node and the offline tools all
share it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional torch alias)
from torch import Tensor, nn

from gifnet_ros.weights import WeightsError, load_state_dict

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
    """Section 2: three dense 3×3 layers; output is concat(X0, e1, e2, e3), 98 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(ReflectConv(2 + 32 * i, 32, 3) for i in range(3))

    def forward(self, x0: Tensor) -> Tensor:
        features = [x0]
        for conv in self.convs:
            features.append(torch.relu(conv(torch.cat(features, dim=1))))
        return torch.cat(features, dim=1)


class RevisedLayerNorm(nn.Module):
    """Section 3.1.1: whole-sample normalisation that also yields the rescale (r) and shift (t)."""

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
    """Section 3.1.4: per-head additive attention bias, shared by both streams of a block."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2, 256), nn.ReLU(), nn.Linear(256, HEADS))
        self.register_buffer("g", relative_position_input(), persistent=False)

    def forward(self) -> Tensor:
        return self.mlp(self.g).permute(2, 0, 1).contiguous()  # heads × 64 × 64


class StreamParams(nn.Module):
    """Everything one stream (I or M) of a block owns (section 3.1)."""

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
    """Reflection padding (before, after) of one axis for the window layout of section 3.1.3."""
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
    """One block of section 3.1 with its M stream and, for block 0, its I stream."""

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
        # With shift 0, stream I attends with M's queries (section 3.1.5).
        queries_i = qmw if self.shift == 0 else qiw
        out_m = F.scaled_dot_product_attention(qmw, kmw, vmw, attn_mask=bias)
        out_i = F.scaled_dot_product_attention(queries_i, kiw, viw, attn_mask=bias)
        m_new = self.stream_m.finish(m, vm, self._unwindow(out_m, n, h, w, hp, wp), rm, tm)
        i_new = self.stream_i.finish(i, vi, self._unwindow(out_i, n, h, w, hp, wp), ri, ti)
        return m_new, i_new


class InteractionTransformer(nn.Module):
    """Section 3: two streams, two blocks, output G from stream M."""

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
    """Section 4: complementary-feature MLP, then four reflect-padded 3×3 layers."""

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


# --- checkpoint mapping ---------------------------------------------------------------------

_SWIN = "extractor_multask.SwinTransformerSpecific."
# Checkpoint entries that inference does not use (ARCHITECTURE.md sections 3, 4 and 6).
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
