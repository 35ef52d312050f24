"""gifnet-train-tim: train TIM (either variant) on the shared M3SVD clips and RoadScene pairs.

TIM's authors publish neither their checkpoints nor their training code or loss, so this
project trains its own weights, unsupervised (there is no ground-truth fused image), on the
CPU. The loss, on the network's output and, for the ivif pipeline, with a smaller weight on
stage 1's (so stage 2 starts from a meaningful image):

    L(F) = |F - T|₁,  T = m·max(ir, vis) + (1 - m)·(ir + vis)/2    intensity
         + w_grad · |∇F - ∇S|₁        texture: S per pixel the source with the stronger edge
         + w_ssim · (1 - (SSIM(F, ir) + SSIM(F, vis)) / 2)           structure of both

with ∇ the signed Sobel responses (x and y), the stronger edge by |x| + |y|, m =
``--intensity-max`` and SSIM over 11×11 Gaussian windows (σ = 1.5). Every term is signed:
an earlier loss matched gradient *magnitudes*, which an image with a source's contrast
inverted satisfies as well as the source itself, and its weights turned white cars and
skies black on scenes they had not seen. ``--distill W`` adds W·|F - GIFNet(ir, vis)|₁,
GIFNet's output (the authors' checkpoint, looked up as everywhere in the package) as a
teacher.

Data: every frame pair of the given M3SVD clips (thermal as the mono8 image a thermal camera
sends, visible as the engine's network input, truncated BT.601 luminance), frames whose index
is a multiple of ``--holdout-every`` held out; and every pair of a RoadScene folder, the pairs
``gifnet_ros.offline.holdout`` names held out. The clips and RoadScene are drawn equally
often. Each step draws ``--batch`` crops, varied (``Augment``: scale, flips, contrast and
brightness, black-hot thermal), from a generator seeded with ``--seed``; with one thread the
run is repeatable bit for bit. The held-out pairs' centre crops give the validation loss.

The output file holds the state dict and, under ``metadata``, everything needed to repeat
and judge the run: the command, seed, data with SHA-256 and the held-out names, steps, crop,
batch, augmentation, learning rate schedule, loss and weights, the loss and validation
curves, wall time, threads and versions. It is written atomically, also every
``--save-every`` steps, so an interrupted run leaves its latest state. This module imports
no ROS.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the conventional torch alias)
from torch import Tensor
from tqdm import tqdm

from gifnet_ros.fusion.image_files import (
    ImageFileError,
    decode_image,
    pair_folders,
    write_bytes_atomic,
)
from gifnet_ros.fusion.metrics import luminance
from gifnet_ros.models.tim import PROJECT_FORMAT, TIM
from gifnet_ros.offline.bag_io import ToolError
from gifnet_ros.offline.holdout import held_out
from gifnet_ros.offline.make_bag import source_pairs, thermal_pixels

PROG = "gifnet-train-tim"
DEFAULT_CLIPS = ("0111_1716", "1230_1202")
_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (the intensity term has weight 1), and ``intensity_max``: the
    share of the brighter source in the intensity target, the rest being the sources' mean."""

    gradient: float = 5.0
    ssim: float = 2.0
    stage1: float = 0.5
    distill: float = 0.0
    intensity_max: float = 0.5


def sobel(x: Tensor) -> Tensor:
    """Signed Sobel responses (x, y) of N×1×H×W images: N×2×H×W, replicate-padded."""
    kernels = torch.stack([_SOBEL, _SOBEL.T])[:, None].to(x)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels)


def stronger_gradient(ir: Tensor, vis: Tensor) -> Tensor:
    """Per pixel, the signed Sobel responses of the source whose edge is stronger there
    (|x| + |y|); ties go to the infrared image."""
    g_ir, g_vis = sobel(ir), sobel(vis)
    take_ir = g_ir.abs().sum(1, keepdim=True) >= g_vis.abs().sum(1, keepdim=True)
    return torch.where(take_ir, g_ir, g_vis)


def _gaussian(size: int = 11, sigma: float = 1.5) -> Tensor:
    taps = torch.exp(-((torch.arange(size) - size // 2) ** 2) / (2 * sigma**2))
    taps = taps / taps.sum()
    return (taps[:, None] * taps[None, :])[None, None]


def ssim_pair_tensor(x: Tensor, y: Tensor) -> Tensor:
    """Mean SSIM of two N×1×H×W images in [0, 1] (Wang et al. 2004, valid windows): the
    differentiable counterpart of ``metrics.ssim_pair``."""
    window = _gaussian().to(x)
    c1, c2 = 0.01**2, 0.03**2
    mx, my = F.conv2d(x, window), F.conv2d(y, window)
    vx = F.conv2d(x * x, window) - mx * mx
    vy = F.conv2d(y * y, window) - my * my
    cov = F.conv2d(x * y, window) - mx * my
    ratio = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return ratio.mean()


def fusion_loss(
    fused: Tensor, ir: Tensor, vis: Tensor, weights: LossWeights
) -> tuple[Tensor, dict[str, float]]:
    """The unsupervised loss of one fused image (module docstring) and its terms. Every term
    is signed: an image that inverts a source's contrast pays for it in each."""
    share = weights.intensity_max
    target = share * torch.maximum(ir, vis) + (1 - share) * (ir + vis) / 2
    intensity = (fused - target).abs().mean()
    texture = (sobel(fused) - stronger_gradient(ir, vis)).abs().mean()
    structure = 1 - (ssim_pair_tensor(fused, ir) + ssim_pair_tensor(fused, vis)) / 2
    total = intensity + weights.gradient * texture + weights.ssim * structure
    terms = {"intensity": intensity.item(), "gradient": texture.item(), "ssim": structure.item()}
    return total, terms


def pipeline_loss(
    model: TIM, ir: Tensor, vis: Tensor, weights: LossWeights, teacher: Tensor | None = None
) -> tuple[Tensor, dict[str, float]]:
    """Loss of TIM on a batch: on its output; for the ivif pipeline plus stage 1's, weighted;
    plus the distillation term when a teacher image is given."""
    if model.model_2 is None:
        fused = model(ir, vis)
        total, terms = fusion_loss(fused, ir, vis, weights)
    else:
        stage1 = model.model_1(ir, vis)
        fused = model.model_2(ir, vis, stage1)
        total, terms = fusion_loss(fused, ir, vis, weights)
        if weights.stage1:
            first, _ = fusion_loss(stage1, ir, vis, weights)
            total = total + weights.stage1 * first
            terms["stage1"] = first.item()
    if teacher is not None:
        distill = (fused - teacher).abs().mean()
        total = total + weights.distill * distill
        terms["distill"] = distill.item()
    terms["total"] = total.item()
    return total, terms


# --- data -----------------------------------------------------------------------------------


@dataclass
class Frames:
    """Grey uint8 image pairs (each pair one size, sizes may differ), which were held out, and
    each training pair's chance of being drawn (every source folder or clip set gets an equal
    share, so the 37 RoadScene training pairs count as much as 300 video frames)."""

    ir: list[np.ndarray]
    vis: list[np.ndarray]
    train: np.ndarray  # indices into ir/vis
    holdout: np.ndarray
    chance: np.ndarray  # per index of ``train``, summing to 1


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _grey(image: np.ndarray) -> np.ndarray:
    """A frame as the network's luminance input, uint8 (truncated BT.601 for colour)."""
    return np.floor(np.clip(luminance(image), 0, 255)).astype(np.uint8)


def m3svd_frames(
    m3svd: Path, clips: Sequence[str], holdout_every: int
) -> tuple[list[tuple[np.ndarray, np.ndarray, bool]], list[dict[str, Any]]]:
    """Every frame pair of the clips (thermal as the mono8 image a thermal camera sends) with
    whether it is held out, and a record of the data (clip, files, SHA-256, frames)."""
    pairs, record = [], []
    for clip in clips:
        thermal, rgb = m3svd / "infrared" / f"{clip}.mp4", m3svd / "visible" / f"{clip}.mp4"
        count = 0
        for index, (t, v) in enumerate(source_pairs(thermal, rgb)):
            pairs.append((thermal_pixels(t, "mono8"), _grey(v), index % holdout_every == 0))
            count += 1
        if count == 0:
            raise ToolError(f"no frames could be read from {thermal} and {rgb}")
        record.append(
            {
                "clip": clip,
                "frames": count,
                "infrared": f"M3SVD infrared/{clip}.mp4",
                "infrared_sha256": _sha256(thermal),
                "visible": f"M3SVD visible/{clip}.mp4",
                "visible_sha256": _sha256(rgb),
            }
        )
    return pairs, record


def roadscene_frames(
    root: Path,
) -> tuple[list[tuple[np.ndarray, np.ndarray, bool]], dict[str, Any]]:
    """Every pair of a RoadScene-like folder (``ir/`` and ``vis/``, same file names) with
    whether ``holdout.held_out`` keeps it out, and a record: the names on each side and one
    SHA-256 over the files in name order."""
    try:
        matched = pair_folders(root / "ir", root / "vis").pairs
    except ImageFileError as exc:
        raise ToolError(str(exc)) from None
    if not matched:
        raise ToolError(f"{root}: no image names common to ir/ and vis/")
    names = [ir_path.name for ir_path, _ in matched]
    pairs, digest = [], hashlib.sha256()
    for ir_path, vis_path in matched:
        try:
            images = []
            for path in (ir_path, vis_path):
                data = path.read_bytes()
                digest.update(data)
                images.append(decode_image(data, path))
        except OSError as exc:
            raise ToolError(f"{path}: {exc.strerror}") from None
        except ImageFileError as exc:
            raise ToolError(str(exc)) from None
        ir, vis = images
        if ir.shape[:2] != vis.shape[:2]:
            raise ToolError(
                f"{ir_path.name}: ir {ir.shape[:2]} and vis {vis.shape[:2]} differ in size"
            )
        pairs.append((_grey(ir), _grey(vis), held_out(ir_path.stem)))
    record = {
        "folder": root.name,
        "pairs": len(names),
        "sha256": digest.hexdigest(),
        "train": [n for n, (_, _, h) in zip(names, pairs, strict=True) if not h],
        "held_out": [n for n, (_, _, h) in zip(names, pairs, strict=True) if h],
    }
    return pairs, record


def build_frames(groups: Sequence[list[tuple[np.ndarray, np.ndarray, bool]]]) -> Frames:
    """One Frames of several sources, each source an equal share of the draws."""
    irs, viss, hold, chance = [], [], [], []
    for group in groups:
        count = sum(not h for _, _, h in group)
        for ir, vis, h in group:
            irs.append(ir)
            viss.append(vis)
            hold.append(h)
            if not h:
                chance.append(1.0 / count)
    mask = np.array(hold)
    weights = np.array(chance)
    return Frames(irs, viss, np.flatnonzero(~mask), np.flatnonzero(mask), weights / weights.sum())


@dataclass(frozen=True)
class Augment:
    """How training crops are varied: the crop's side is drawn from [crop, ``max_scale``·crop]
    (clipped to the image) and resized to ``crop``; flips; each source's contrast scaled by a
    factor in [1 − ``contrast``, 1 + ``contrast``] about its mean and shifted by up to
    ±``brightness``; the thermal image inverted (black-hot) with chance ``invert``."""

    max_scale: float = 2.5
    vflip: float = 0.25
    contrast: float = 0.3
    brightness: float = 0.1
    invert: float = 0.3


def _jitter(patch: np.ndarray, rng: np.random.Generator, augment: Augment) -> np.ndarray:
    x = patch.astype(np.float32) / 255.0
    gain = rng.uniform(1 - augment.contrast, 1 + augment.contrast)
    shift = rng.uniform(-augment.brightness, augment.brightness)
    mean = float(x.mean())
    return np.clip((x - mean) * gain + mean + shift, 0.0, 1.0)


def sample_batch(
    frames: Frames, rng: np.random.Generator, batch: int, crop: int, augment: Augment
) -> tuple[Tensor, Tensor]:
    """``batch`` random crops of training pairs, varied as ``augment`` says."""
    irs, viss = [], []
    for _ in range(batch):
        k = rng.choice(frames.train, p=frames.chance)
        height, width = frames.ir[k].shape
        top = max(crop, min(height, width, round(augment.max_scale * crop)))
        side = int(rng.integers(crop, top + 1))
        y, x = rng.integers(height - side + 1), rng.integers(width - side + 1)
        hflip, vflip = rng.random() < 0.5, rng.random() < augment.vflip
        patches = []
        for source in (frames.ir[k], frames.vis[k]):
            patch = source[y : y + side, x : x + side]
            if side != crop:
                patch = cv2.resize(patch, (crop, crop), interpolation=cv2.INTER_AREA)
            patch = patch[:, ::-1] if hflip else patch
            patch = patch[::-1] if vflip else patch
            patches.append(_jitter(patch, rng, augment))
        ir, vis = patches
        irs.append(1.0 - ir if rng.random() < augment.invert else ir)
        viss.append(vis)
    return _to_tensor(irs), _to_tensor(viss)


def _to_tensor(images: list[np.ndarray]) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.stack(images)[:, None], dtype=np.float32))


def holdout_batch(frames: Frames, crop: int) -> tuple[Tensor, Tensor]:
    """Centre crops of the held-out pairs, unvaried: the fixed validation set."""
    irs, viss = [], []
    for k in frames.holdout:
        height, width = frames.ir[k].shape
        y, x = (height - crop) // 2, (width - crop) // 2
        irs.append(frames.ir[k][y : y + crop, x : x + crop].astype(np.float32) / 255.0)
        viss.append(frames.vis[k][y : y + crop, x : x + crop].astype(np.float32) / 255.0)
    return _to_tensor(irs), _to_tensor(viss)


# --- training -------------------------------------------------------------------------------


def validation_loss(model: TIM, ir: Tensor, vis: Tensor, weights: LossWeights) -> float:
    """The loss (without distillation) of the model as it will be used: eval mode."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        _, terms = pipeline_loss(model, ir, vis, LossWeights(**{**asdict(weights), "distill": 0}))
    model.train(was_training)
    return terms["total"]


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up to ``peak``, then cosine decay to 1% of it at the last step."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


def save(path: Path, model: TIM, metadata: dict[str, Any]) -> None:
    """The project's weights file, written atomically."""
    record = {
        "format": PROJECT_FORMAT,
        "variant": model.variant,
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "metadata": metadata,
    }
    buffer = io.BytesIO()
    torch.save(record, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def _teacher(weights: str | None) -> Any:
    from gifnet_ros.models.gifnet import load_model

    return load_model(weights, "cpu")


def train(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Run the training the arguments describe (``command``: how it was invoked, recorded);
    return the metadata written with the weights."""
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    # The light variant has no stage 2, so no separate stage-1 term.
    stage1 = args.w_stage1 if args.variant == "ivif" else 0.0
    weights = LossWeights(args.w_gradient, args.w_ssim, stage1, args.distill, args.intensity_max)
    augment = Augment(args.max_scale, args.vflip, args.contrast, args.brightness, args.invert)
    groups, data, roadscene = [], [], None
    if args.clips:
        clips, data = m3svd_frames(args.m3svd, args.clips, args.holdout_every)
        groups.append(clips)
    if args.roadscene is not None:
        pairs, roadscene = roadscene_frames(args.roadscene)
        groups.append(pairs)
    if not groups:
        raise ToolError("no training data: give --clips, --roadscene or both")
    frames = build_frames(groups)
    smallest = min(min(image.shape) for image in frames.ir)
    if smallest < max(args.crop, args.val_crop):
        raise ToolError(
            f"crop {max(args.crop, args.val_crop)} is larger than the smallest image side "
            f"{smallest}"
        )
    val_ir, val_vis = holdout_batch(frames, args.val_crop)
    teacher = _teacher(args.gifnet_weights) if weights.distill else None

    model = TIM(args.variant)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    metadata: dict[str, Any] = {
        "what": f"TIM {args.variant} weights trained by gifnet_ros (not the TIM authors' weights)",
        "licence": "MIT (gifnet_ros); trained on M3SVD clips (Tang et al., MIT licence) and "
        "RoadScene pairs (Xu et al., research data set)",
        "command": command,
        "seed": args.seed,
        "data": data,
        "roadscene": roadscene,
        "augment": asdict(augment),
        "train_frames": len(frames.train),
        "holdout_frames": len(frames.holdout),
        "holdout_every": args.holdout_every,
        "steps": args.steps,
        "batch": args.batch,
        "crop": args.crop,
        "lr": args.lr,
        "warmup": args.warmup,
        "schedule": "Adam; linear warm-up, cosine decay to 1% of lr",
        "loss": "L(F) = |F-(m*max(ir,vis)+(1-m)*(ir+vis)/2)|_1 + w_gradient*|grad F - grad S|_1"
        " + w_ssim*(1-(SSIM(F,ir)+SSIM(F,vis))/2) on the output, + w_stage1*L(stage 1 output)"
        " + w_distill*|F-GIFNet|_1; m = intensity_max; grad: signed Sobel x and y; S per pixel"
        " the source with the stronger edge (|x|+|y|); SSIM 11x11 Gaussian sigma 1.5",
        "loss_weights": asdict(weights),
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    metadata["validation_loss_before"] = validation_loss(model, val_ir, val_vis, weights)
    validation: list[list[float]] = [[0, metadata["validation_loss_before"]]]
    curve: list[list[float]] = []
    recent: list[float] = []
    start = time.monotonic()
    bar = tqdm(range(args.steps), desc=PROG, unit="step", disable=None if args.progress else True)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, args.warmup)
        ir, vis = sample_batch(frames, rng, args.batch, args.crop, augment)
        target = None
        if teacher is not None:
            with torch.no_grad():
                target = teacher(ir, vis)
        loss, terms = pipeline_loss(model, ir, vis, weights, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        recent.append(terms["total"])
        bar.set_postfix(loss=f"{terms['total']:.4f}")
        done = step + 1
        if done % args.log_every == 0 or done == args.steps:
            mean = float(np.mean(recent))
            curve.append([done, mean])
            recent.clear()
            parts = " ".join(f"{k}={v:.4f}" for k, v in terms.items())
            tqdm.write(f"step {done}/{args.steps}: mean loss {mean:.4f} (last: {parts})")
        if done % args.save_every == 0 and done < args.steps:
            validation.append([done, validation_loss(model, val_ir, val_vis, weights)])
            tqdm.write(f"step {done}/{args.steps}: validation loss {validation[-1][1]:.4f}")
            progress = {
                "steps_done": done,
                "loss_curve": curve,
                "validation_curve": validation,
                "complete": False,
            }
            save(args.output, model, {**metadata, **progress})
    metadata["wall_seconds"] = round(time.monotonic() - start, 1)
    metadata["loss_curve"] = curve
    metadata["final_loss"] = curve[-1][1]
    metadata["validation_loss_after"] = validation_loss(model, val_ir, val_vis, weights)
    metadata["validation_curve"] = [*validation, [args.steps, metadata["validation_loss_after"]]]
    metadata["steps_done"] = args.steps
    metadata["complete"] = True
    save(args.output, model, metadata)
    return metadata
