"""TIM, the second fusion network: Liu et al., "A Task-guided, Implicitly-searched and
Meta-initialized Deep Model for Image Fusion" (IEEE TPAMI 2024; arXiv 2305.15862).

Written by this project from the authors' public code (LiuZhu-CV/TIMFusion, MIT licence,
commit 917b395) and ../shared/tim/README.md. The module and attribute names below follow the
keys of the authors' state dicts, so their checkpoints load unchanged; the code is our own.

Two variants, as the authors' IVIF test scripts build them:

- ``ivif`` (1.23 M parameters, about 275 GFLOP per 640×480 pair): stage 1, a searched
  network that fuses the two sources (a multi-scale cell at full, 1/2 and 1/4 size, then a
  chain cell), in eval mode; stage 2, a refiner that sees each source beside stage 1's result
  in two branches and mixes the branches' features by a learned spatial mask. The authors run
  stage 2 in training mode, so its eight BatchNorm layers normalise every image with its own
  statistics; here they are instance norms with the BatchNorm affine, which is the same at N = 1
  and keeps each sample of a batch independent. Stage 2's two auxiliary tanh heads are
  discarded by the authors' script and are not built (their checkpoint entries are ignored).
- ``light`` (0.13 M parameters, about 78 GFLOP): stage 1 alone with two chain cells, fed the
  visible image first.

Neither has an output activation: ``forward`` returns the unclamped result, as the authors'
script does before it saves (and clamps) the image.

Quirks of the authors' networks that are kept because their weights depend on them: the
mask's channel pooling stacks [max, max, mean]; the dense block's grouped convolutions see
pairs of adjacent channels of the concatenated tensor (so most groups mix two channels of one
source tensor); the dense block scales its branch by 0.333.

Weights: the authors' checkpoints are not public (a private drive). ``load_tim`` takes them
when a user has them; without them it loads the weights this project trained itself on
M3SVD frames and RoadScene pairs for each variant (gifnet_ros/data/, see docs/tim.md), which
are NOT the authors' weights.

This module imports no ROS.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional torch alias)
from torch import Tensor, nn

from gifnet_ros.models import MIN_SIZE
from gifnet_ros.models.weights import WeightsError, torch_load_failure

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable  # Python 3.11+; only for type checking

VARIANTS = ("ivif", "light")
# The engine's network names for the variants (FusionEngine(network=...), --network).
NETWORK_VARIANTS = {"tim": "ivif", "tim_light": "light"}
CHANNELS = 48
# Stage 1 of the ivif variant works at 1/2 and 1/4 size: inputs are padded to a multiple.
_IVIF_MULTIPLE = 4
# The project's own weights file: a dict with this format tag, the variant, the state dict
# of a TIM module and the training metadata.
PROJECT_FORMAT = "gifnet_ros-tim/1"
# Read through importlib.resources, so an installed package finds them wherever it lives.
PROJECT_WEIGHTS: dict[str, Traversable] = {
    variant: files("gifnet_ros").joinpath("data", f"tim_{variant}_project.pt")
    for variant in VARIANTS
}
PROJECT_SHA256: dict[str, str] = {
    "ivif": "d8638af339f22290688c354ec8fe2b9fd9971eafa7820e37edd7a4ef2ef3e80a",
    "light": "c23e8730cdec3bb531670989205d3d53753d33c51b914e7b0b3122746c6f4b56",
}
# Checkpoint entries of the authors' stage 2 that the fused output does not use.
_UNUSED_PREFIXES = ("stem_out2.", "stem_out3.")

_log = logging.getLogger(__name__)

WeightsArg = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None


# --- building blocks ------------------------------------------------------------------------


class InstanceNorm(nn.BatchNorm2d):
    """A BatchNorm2d (same state-dict entries) that normalises each image by its own
    statistics: stage 2 as the authors run it (in training mode), one image at a time."""

    def forward(self, x: Tensor) -> Tensor:
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)


class ConvUnit(nn.Module):
    """A bias-free convolution with 'same' zero padding, under the attribute ``conv``."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int = 1, groups: int = 1):
        super().__init__()
        pad = dilation * (kernel - 1) // 2
        self.conv = nn.Conv2d(c_in, c_out, kernel, 1, pad, dilation, groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class ReflectConv(nn.Module):
    """A convolution with bias after 'same' reflection padding (the stems)."""

    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__()
        self.pad = kernel // 2
        self.conv2d = nn.Conv2d(c_in, c_out, kernel)

    def forward(self, x: Tensor) -> Tensor:
        if self.pad:
            x = F.pad(x, (self.pad,) * 4, mode="reflect")
        return self.conv2d(x)


def _conv1x1(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, bias=False)


class ResidualOp(nn.Module):
    """x + PReLU(BN(1×1(dilated depthwise 3×3(depthwise k×k(x)))))."""

    def __init__(self, c: int, kernel: int, dilation: int, norm: type[nn.BatchNorm2d]):
        super().__init__()
        self.op = nn.Sequential(
            ConvUnit(c, c, kernel, dilation, groups=c),
            nn.Conv2d(c, c, 3, 1, 2, 2, groups=c, bias=False),
            _conv1x1(c, c),
            norm(c),
            nn.PReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.op(x)


class DilatedOp(nn.Module):
    """x + BN(1×1(dilated depthwise k×k(ReLU(x))))."""

    def __init__(self, c: int, kernel: int, dilation: int, norm: type[nn.BatchNorm2d]):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(),
            ConvUnit(c, c, kernel, dilation, groups=c),
            _conv1x1(c, c),
            norm(c),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.op(x)


class DenseOp(nn.Module):
    """A three-step dense block of grouped convolutions (one shared PReLU), residual 0.333."""

    def __init__(self, c: int, kernel: int, dilation: int, norm: type[nn.BatchNorm2d]):
        super().__init__()
        self.conv1 = ConvUnit(c, c, kernel, dilation, groups=c)
        self.conv2 = ConvUnit(2 * c, c, kernel, dilation, groups=c)
        self.conv3 = ConvUnit(3 * c, c, kernel, dilation, groups=c)
        self.lrelu = nn.PReLU()

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat([x, x1], 1)))
        x3 = self.lrelu(self.conv3(torch.cat([x, x1, x2], 1)))
        return x3 * 0.333 + x


class ChannelGate(nn.Module):
    """Efficient channel attention: a 1-D convolution across the channels' spatial means."""

    def __init__(self, kernel: int):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel, padding=(kernel - 1) // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        means = x.mean(dim=(2, 3))[:, None, :]  # N×1×C
        return x * torch.sigmoid(self.conv(means))[:, 0, :, None, None]


class ChannelAttentionOp(nn.Module):
    """PReLU(3×3(channel-gated x)), no residual."""

    def __init__(self, c: int, kernel: int, dilation: int, norm: type[nn.BatchNorm2d]):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.se = ChannelGate(kernel)
        self.relu = nn.PReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv1(self.se(x)))


class SpatialGate(nn.Module):
    """sigmoid(k×k convolution of the per-pixel channel statistics), a 1×H×W map.

    ``repeat_max`` stacks [max, max, mean] instead of [max, mean]: the authors' stage-2 mask.
    """

    def __init__(self, kernel: int, repeat_max: bool = False):
        super().__init__()
        self.repeat_max = repeat_max
        self.spatial = ConvUnit(3 if repeat_max else 2, 1, kernel)

    def forward(self, x: Tensor) -> Tensor:
        peak, mean = x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)
        stats = [peak, peak, mean] if self.repeat_max else [peak, mean]
        return torch.sigmoid(self.spatial(torch.cat(stats, 1)))


class SpatialAttentionOp(nn.Module):
    """x weighted per pixel by a spatial gate, no residual."""

    def __init__(self, c: int, kernel: int, dilation: int, norm: type[nn.BatchNorm2d]):
        super().__init__()
        self.se = SpatialGate(kernel)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.se(x)


OPS: dict[str, type[nn.Module]] = {
    "residual": ResidualOp,
    "dilated": DilatedOp,
    "dense": DenseOp,
    "channel_attention": ChannelAttentionOp,
    "spatial_attention": SpatialAttentionOp,
}
# An operation of a searched cell: (name in OPS, kernel size, dilation).
OpSpec = tuple[str, int, int]


class SearchedOp(nn.Module):
    """One searched operation, under the attribute ``_op`` as in the authors' keys."""

    def __init__(self, c: int, spec: OpSpec, norm: type[nn.BatchNorm2d]):
        super().__init__()
        name, kernel, dilation = spec
        self._op = OPS[name](c, kernel, dilation, norm)

    def forward(self, x: Tensor) -> Tensor:
        return self._op(x)


class ReLUConvNorm(nn.Module):
    """The cells' input projection: norm(1×1(ReLU(x)))."""

    def __init__(self, c: int, norm: type[nn.BatchNorm2d]):
        super().__init__()
        self.op = nn.Sequential(nn.ReLU(), _conv1x1(c, c), norm(c))

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class ChainCell(nn.Module):
    """Input projection, then the searched operations one after the other."""

    def __init__(self, c: int, ops: Sequence[OpSpec], norm: type[nn.BatchNorm2d]):
        super().__init__()
        self.preprocess1 = ReLUConvNorm(c, norm)
        self._ops = nn.ModuleList(SearchedOp(c, spec, norm) for spec in ops)

    def forward(self, x: Tensor) -> Tensor:
        x = self.preprocess1(x)
        for op in self._ops:
            x = op(x)
        return x


class Blur(nn.Module):
    """Anti-aliased stride-2 subsampling: depthwise [1 2 1]ᵀ[1 2 1]/16 after reflection
    padding; the filter is a buffer because the authors' checkpoints carry it."""

    def __init__(self, c: int):
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = taps[:, None] * taps[None, :]
        self.register_buffer("filt", (kernel / kernel.sum()).expand(c, 1, 3, 3).clone())

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(
            F.pad(x, (1, 1, 1, 1), mode="reflect"), self.filt, stride=2, groups=x.shape[1]
        )


class HalveSize(nn.Module):
    """Half size, twice the channels: a conv branch and a blur branch, summed."""

    def __init__(self, c: int):
        super().__init__()
        self.top = nn.Sequential(
            _conv1x1(c, c),
            nn.PReLU(),
            nn.Conv2d(c, c, 3, padding=1, bias=False),
            nn.PReLU(),
            Blur(c),
            _conv1x1(c, 2 * c),
        )
        self.bot = nn.Sequential(Blur(c), _conv1x1(c, 2 * c))

    def forward(self, x: Tensor) -> Tensor:
        return self.top(x) + self.bot(x)


class DoubleSize(nn.Module):
    """Twice the size, half the channels: a transposed-conv branch and a bilinear branch."""

    def __init__(self, c: int):
        super().__init__()
        self.top = nn.Sequential(
            _conv1x1(c, c),
            nn.PReLU(),
            nn.ConvTranspose2d(c, c, 3, stride=2, padding=1, output_padding=1, bias=False),
            nn.PReLU(),
            _conv1x1(c, c // 2),
        )
        self.bot = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            _conv1x1(c, c // 2),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.top(x) + self.bot(x)


class Rescale(nn.Module):
    """``steps`` halvings (``down``) or doublings, under the attribute ``body``."""

    def __init__(self, c: int, steps: int, down: bool):
        super().__init__()
        widths = [c * 2**k for k in range(steps)] if down else [c // 2**k for k in range(steps)]
        self.body = nn.Sequential(*(HalveSize(w) if down else DoubleSize(w) for w in widths))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class SelectiveKernelMix(nn.Module):
    """Softmax-weighted sum of three same-size maps, weights per channel from their pooled sum."""

    def __init__(self, c: int, branches: int = 3, reduction: int = 8):
        super().__init__()
        hidden = max(c // reduction, 4)
        self.conv_du = nn.Sequential(_conv1x1(c, hidden), nn.PReLU())
        self.fcs = nn.ModuleList(_conv1x1(hidden, c) for _ in range(branches))

    def forward(self, maps: Sequence[Tensor]) -> Tensor:
        stacked = torch.stack(list(maps), 1)  # N×B×C×H×W
        squeezed = self.conv_du(stacked.sum(1).mean(dim=(2, 3), keepdim=True))
        weights = torch.stack([fc(squeezed) for fc in self.fcs], 1).softmax(dim=1)
        return (stacked * weights).sum(1)


class MultiScaleCell(nn.Module):
    """Input projection; the searched operations at full, 1/2 and 1/4 size (2× and 4× the
    channels); the two coarse results brought back and mixed with the fine one; residual."""

    def __init__(self, c: int, ops: Sequence[OpSpec], norm: type[nn.BatchNorm2d]):
        super().__init__()
        self.preprocess1 = ReLUConvNorm(c, norm)
        self.down_2 = Rescale(c, 1, down=True)
        self.down_4 = Rescale(c, 2, down=True)
        self.upsample_2 = Rescale(2 * c, 1, down=False)
        self.upsample_4 = Rescale(4 * c, 2, down=False)
        self.SKFF = SelectiveKernelMix(c)  # the authors' key
        self._ops = nn.ModuleList(SearchedOp(c, spec, norm) for spec in ops)
        self._ops_1 = nn.ModuleList(SearchedOp(2 * c, spec, norm) for spec in ops)
        self._ops_2 = nn.ModuleList(SearchedOp(4 * c, spec, norm) for spec in ops)

    def forward(self, x: Tensor) -> Tensor:
        x = self.preprocess1(x)
        full, half, quarter = x, self.down_2(x), self.down_4(x)
        for op, op_1, op_2 in zip(self._ops, self._ops_1, self._ops_2, strict=True):
            full, half, quarter = op(full), op_1(half), op_2(quarter)
        return x + self.SKFF([full, self.upsample_2(half), self.upsample_4(quarter)])


def _stem(c: int, norm: type[nn.BatchNorm2d] | None = None) -> nn.Sequential:
    """Two sources in, ``c`` feature channels out (with a norm before the last PReLU in
    stage 2)."""
    layers: list[nn.Module] = [ReflectConv(2, 2 * c, 3), nn.PReLU(), ReflectConv(2 * c, c, 3)]
    if norm is not None:
        layers.append(norm(c))
    return nn.Sequential(*layers, nn.PReLU())


def _head(c: int, activation: bool = True) -> nn.Sequential:
    """``c`` feature channels to one image channel."""
    first: list[nn.Module] = [ReflectConv(c, c, 3)] + ([nn.PReLU()] if activation else [])
    return nn.Sequential(*first, ReflectConv(c, c // 2, 3), ReflectConv(c // 2, 1, 1))


# The searched cells of stage 1 (genotypes fusion_M and fusion_light of the authors' code).
_IVIF_CELLS: tuple[tuple[type[nn.Module], tuple[OpSpec, ...]], ...] = (
    (MultiScaleCell, (("residual", 3, 1), ("dilated", 3, 2))),
    (ChainCell, (("dense", 3, 1), ("dilated", 3, 2))),
)
_LIGHT_CELL = (("residual", 3, 1), ("channel_attention", 3, 1))
_LIGHT_CELLS = ((ChainCell, _LIGHT_CELL), (ChainCell, _LIGHT_CELL))
# Stage 2's branch cells (genotypes fusion_ir_proposed and fusion_vis_proposed).
_IR_BRANCH = (("spatial_attention", 3, 1), ("dilated", 3, 2))
_VIS_BRANCH = (("channel_attention", 3, 1), ("spatial_attention", 3, 1))


class Stage1(nn.Module):
    """Stem, two searched cells, head: the two sources in, one fused image out."""

    def __init__(
        self, cells: Sequence[tuple[type[nn.Module], Sequence[OpSpec]]], c: int = CHANNELS
    ):
        super().__init__()
        self.stem = _stem(c)
        self.cells = nn.ModuleList(cell(c, ops, nn.BatchNorm2d) for cell, ops in cells)
        self.stem_out = _head(c)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        x = self.stem(torch.cat([a, b], 1))
        for cell in self.cells:
            x = cell(x)
        return self.stem_out(x)


class Stage2(nn.Module):
    """The refiner: a visible branch and an infrared branch, each with stage 1's result
    beside its source, mixed by a spatial mask computed from the visible branch."""

    def __init__(self, c: int = CHANNELS):
        super().__init__()
        self.spa = SpatialGate(1, repeat_max=True)
        self.stem2 = _stem(c, InstanceNorm)  # visible branch
        self.stem3 = _stem(c, InstanceNorm)  # infrared branch
        self.cells2 = nn.ModuleList(ChainCell(c, _IR_BRANCH, InstanceNorm) for _ in range(2))
        self.cells3 = nn.ModuleList(ChainCell(c, _VIS_BRANCH, InstanceNorm) for _ in range(2))
        self.stem_out4 = _head(c, activation=False)

    def forward(self, ir: Tensor, vis: Tensor, fused: Tensor) -> Tensor:
        vis_feat = self.stem2(torch.cat([vis, fused], 1))
        ir_feat = self.stem3(torch.cat([ir, fused], 1))
        for cell in self.cells3:
            vis_feat = cell(vis_feat)
        for cell in self.cells2:
            ir_feat = cell(ir_feat)
        mask = self.spa(vis_feat)
        return self.stem_out4(mask * vis_feat + (1 - mask) * ir_feat)


class TIM(nn.Module):
    """TIM inference: forward(ir, vis) → fused image, all N×1×H×W, inputs in [0, 1].

    The result is not clamped (the authors clamp only when saving). Any H, W ≥ 8. The ivif
    variant's stage 1 works at 1/2 and 1/4 size, so there a size that is not a multiple of 4
    is reflection-padded at the bottom and right to the next multiple (at most 3 rows and 3
    columns, mirrored without repeating the edge) and the result cropped back to H×W. The
    padded pixels take part in the image-wide statistics (channel-attention means, stage 2's
    instance norms), so they nudge the result slightly; sizes that are multiples of 4 (e.g.
    640×480) are fused as they are. The light variant needs no padding. Each sample of a batch
    gets exactly what it gets alone: nothing is computed across samples (stage 1's BatchNorms
    use their running statistics in eval mode, stage 2 normalises per image).
    """

    def __init__(self, variant: str = "ivif"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown TIM variant {variant!r} (expected one of {VARIANTS})")
        self.variant = variant
        # H and W that fuse_padded takes are multiples of this (forward pads to it).
        self.size_multiple = _IVIF_MULTIPLE if variant == "ivif" else 1
        self.model_1 = Stage1(_IVIF_CELLS if variant == "ivif" else _LIGHT_CELLS)
        self.model_2 = Stage2() if variant == "ivif" else None

    def forward(self, ir: Tensor, vis: Tensor) -> Tensor:
        if ir.shape != vis.shape or ir.dim() != 4 or ir.shape[1] != 1:
            raise ValueError(
                f"TIM takes two N×1×H×W tensors of one shape, got {tuple(ir.shape)} "
                f"and {tuple(vis.shape)}"
            )
        height, width = ir.shape[-2:]
        if min(height, width) < MIN_SIZE:
            raise ValueError(f"TIM needs H and W of at least {MIN_SIZE}, got {(height, width)}")
        ir, vis = (pad_to_multiple(t, self.size_multiple) for t in (ir, vis))
        return self.fuse_padded(ir, vis)[..., :height, :width]

    def fuse_padded(self, ir: Tensor, vis: Tensor) -> Tensor:
        """The network alone, on inputs whose H and W are multiples of ``size_multiple``: no
        checks, no padding, no crop. What the ONNX export holds (gifnet_ros.models.onnx), whose
        runner pads and crops around it with pad_to_multiple as forward does."""
        if self.model_2 is None:
            return self.model_1(vis, ir)  # the light script feeds the visible image first
        return self.model_2(ir, vis, self.model_1(ir, vis))


def pad_to_multiple(image: Tensor, multiple: int) -> Tensor:
    """``image`` (…×H×W) reflection-padded at the bottom and right to the next multiples of
    ``multiple`` (at most multiple - 1 rows and columns, mirrored without repeating the edge):
    TIM's size rule, shared by TIM.forward and the ONNX runner so both pad alike."""
    pad_h, pad_w = -image.shape[-2] % multiple, -image.shape[-1] % multiple
    if not (pad_h or pad_w):
        return image
    return F.pad(image, (0, pad_w, 0, pad_h), mode="reflect")


# --- weights --------------------------------------------------------------------------------


def _file_bytes(path: Path | Traversable) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"cannot read TIM weights file {path}: {exc.strerror or exc}") from exc


def _read(path: Path | Traversable, sha256: str | None = None) -> Mapping[str, Any]:
    """A checkpoint file safely unpickled (weights_only) on the CPU, its SHA-256 checked
    when one is given; WeightsError (one line) naming the file otherwise."""
    data = _file_bytes(path)
    if sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise WeightsError(
                f"TIM weights file {path} has SHA-256 {actual[:12]}..., expected "
                f"{sha256[:12]}... (damaged or replaced; reinstall gifnet_ros)"
            )
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise WeightsError(
            f"TIM weights file {path} is not a loadable state dict: {torch_load_failure(exc)[1]}"
        ) from exc
    if not isinstance(loaded, Mapping) or not loaded:
        raise WeightsError(
            f"TIM weights file {path} is not a state dict (a {type(loaded).__name__})"
        )
    return loaded


def _load_into(module: nn.Module, state: Mapping[str, Any], source: str) -> None:
    """Load a state dict strictly, except stage 2's unused heads; one-line errors."""
    state = {k: v for k, v in state.items() if not k.startswith(_UNUSED_PREFIXES)}
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unknown = [k for k in state if k not in expected]
    if missing or unknown:
        what = f"{len(missing)} tensors missing, first {missing[0]!r}" if missing else ""
        if unknown:
            what += ("; " if what else "") + f"{len(unknown)} unexpected, first {unknown[0]!r}"
        raise WeightsError(f"{source} does not fit TIM {module.__class__.__name__}: {what}")
    for key, value in state.items():
        if not isinstance(value, Tensor) or value.shape != expected[key].shape:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise WeightsError(
                f"{source}: {key!r} is {shape}, TIM expects {tuple(expected[key].shape)}"
            )
    module.load_state_dict(state)


def weight_files(text: str) -> list[str]:
    """The files of a comma-separated weights value (the ivif pair: model_1, model_2), as a
    flag or a node parameter gives them."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _paths(variant: str, weights: WeightsArg) -> list[Path]:
    if isinstance(weights, str):  # one path, or the ivif pair as "model_1.pt,model_2.pt"
        weights = weight_files(weights)
    elif isinstance(weights, os.PathLike):
        weights = [weights]
    paths = [Path(p).expanduser() for p in weights or ()]
    wanted = "a pair of paths (model_1, model_2) or" if variant == "ivif" else ""
    if len(paths) not in ((1, 2) if variant == "ivif" else (1,)):
        raise WeightsError(
            f"TIM {variant} weights: expected {wanted} one path, got {len(paths)} paths"
        )
    return paths


def weight_sources(variant: str, weights: WeightsArg = None) -> list[Path | Traversable]:
    """The file(s) load_tim(variant, weights) reads, in order: the project's own file for
    None."""
    return [PROJECT_WEIGHTS[variant]] if weights is None else list(_paths(variant, weights))


def weights_digest(variant: str, weights: WeightsArg = None) -> str:
    """One SHA-256 over the bytes of the weight file(s) that load_tim(variant, weights)
    reads: part of a TIM export's cache name (gifnet_ros.models.onnx), so a changed file gets a
    new export; WeightsError (one line) for a file that cannot be read."""
    digest = hashlib.sha256()
    for path in weight_sources(variant, weights):
        digest.update(_file_bytes(path))
    return digest.hexdigest()


def project_metadata(variant: str = "ivif") -> dict[str, Any]:
    """The training record stored in the project's own weights file for ``variant``."""
    return dict(_read(PROJECT_WEIGHTS[variant], PROJECT_SHA256[variant])["metadata"])


def load_tim(
    variant: str = "ivif", weights: WeightsArg = None, device: str | torch.device = "cpu"
) -> TIM:
    """TIM in inference mode on ``device``, with weights.

    ``weights``: None for the weights this project trained and ships (SHA-256 checked; they
    are not the authors'); the authors' state dicts (ivif: a pair of paths, model_1's then
    model_2's, or one string ``"model_1.pt,model_2.pt"``; light: one path); or a file
    written by gifnet-train-tim.
    """
    model = TIM(variant)
    paths = weight_sources(variant, weights)
    hashes: list[str | None] = [PROJECT_SHA256[variant]] if weights is None else [None] * len(paths)
    loaded = [_read(path, sha) for path, sha in zip(paths, hashes, strict=True)]
    if len(loaded) == 1 and loaded[0].get("format") == PROJECT_FORMAT:
        record = loaded[0]
        if record.get("variant") != variant:
            raise WeightsError(
                f"{paths[0]} holds TIM {record.get('variant')!r} weights, not {variant!r}"
            )
        _load_into(model, record["state_dict"], str(paths[0]))
        if weights is None:
            _log.warning(
                "TIM %s: weights trained by gifnet_ros on M3SVD and RoadScene (%s), not the "
                "authors' checkpoint; pass the authors' files as weights to use theirs",
                variant,
                paths[0].name,
            )
    elif variant == "ivif" and len(loaded) == 2:
        _load_into(model.model_1, loaded[0], str(paths[0]))
        _load_into(model.model_2, loaded[1], str(paths[1]))
    elif variant == "light":
        _load_into(model.model_1, loaded[0], str(paths[0]))
    else:
        raise WeightsError(
            f"{paths[0]} is not a gifnet-train-tim file; the authors' ivif weights are a pair "
            "of files (model_1, model_2)"
        )
    model.eval().requires_grad_(False)
    return model.to(device)
