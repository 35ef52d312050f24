"""gifnet-train-tim: train TIM (either variant) on frames of the shared M3SVD clips.

TIM's authors publish neither their checkpoints nor their training code or loss, so this
project trains its own weights, unsupervised (there is no ground-truth fused image), on the
CPU. The loss is the usual one of unsupervised infrared/visible fusion, on the network's
output and, for the ivif pipeline, with a smaller weight on stage 1's (so stage 2 starts
from a meaningful image):

    L(F) = |F - max(ir, vis)|₁                             intensity: keep the brighter source
         + w_grad · | |∇F| - max(|∇ir|, |∇vis|) |₁         texture: keep the stronger edge
         + w_ssim · (1 - (SSIM(F, ir) + SSIM(F, vis)) / 2)  structure of both sources

with |∇| the sum of the absolute Sobel responses and SSIM over 11×11 Gaussian windows
(σ = 1.5). ``--distill W`` adds W·|F - GIFNet(ir, vis)|₁, GIFNet's output (the authors'
checkpoint, looked up as everywhere in the package) as a teacher.

Data: every frame pair of the given M3SVD clips (thermal as the mono8 image a thermal camera
sends, visible as the engine's network input, truncated BT.601 luminance), frames whose index
is a multiple of ``--holdout-every`` held out for a validation loss on their centre crops.
Each step draws ``--batch`` random crops (random frame, position and horizontal flip) from a
generator seeded with ``--seed``; with one thread the run is repeatable bit for bit.

The output file holds the state dict and, under ``metadata``, everything needed to repeat
and judge the run: the command, seed, clips with their SHA-256, steps, crop, batch, learning
rate schedule, loss and weights, the loss curve, validation loss before and after, wall time,
threads and versions. It is written atomically, also every ``--save-every`` steps, so an
interrupted run leaves its latest state. This module imports no ROS.
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

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the conventional torch alias)
from torch import Tensor
from tqdm import tqdm

from gifnet_ros.fusion.image_files import write_bytes_atomic
from gifnet_ros.fusion.metrics import luminance
from gifnet_ros.models.tim import PROJECT_FORMAT, TIM
from gifnet_ros.offline.bag_io import ToolError
from gifnet_ros.offline.make_bag import source_pairs, thermal_pixels

PROG = "gifnet-train-tim"
DEFAULT_CLIPS = ("0111_1716", "1230_1202")
_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (the intensity term has weight 1)."""

    gradient: float = 10.0
    ssim: float = 1.0
    stage1: float = 0.5
    distill: float = 0.0


def _gradient(x: Tensor) -> Tensor:
    """|Sobel x| + |Sobel y| of N×1×H×W images, replicate-padded to keep the size."""
    kernels = torch.stack([_SOBEL, _SOBEL.T])[:, None].to(x)
    response = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels)
    return response.abs().sum(1, keepdim=True)


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
    """The unsupervised loss of one fused image (module docstring) and its terms."""
    intensity = (fused - torch.maximum(ir, vis)).abs().mean()
    texture = (_gradient(fused) - torch.maximum(_gradient(ir), _gradient(vis))).abs().mean()
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
    """Grey uint8 frame pairs (K×H×W each) and which were held out."""

    ir: np.ndarray
    vis: np.ndarray
    train: np.ndarray  # indices into ir/vis
    holdout: np.ndarray


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_frames(m3svd: Path, clips: Sequence[str], holdout_every: int) -> tuple[Frames, list]:
    """Every frame pair of the clips, and a record of the data (clip, files, SHA-256, frames)."""
    irs, viss, holdout, record = [], [], [], []
    for clip in clips:
        thermal, rgb = m3svd / "infrared" / f"{clip}.mp4", m3svd / "visible" / f"{clip}.mp4"
        count = 0
        for index, (t, v) in enumerate(source_pairs(thermal, rgb)):
            irs.append(thermal_pixels(t, "mono8"))
            viss.append(np.floor(np.clip(luminance(v), 0, 255)).astype(np.uint8))
            holdout.append(index % holdout_every == 0)
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
    shapes = {a.shape for a in irs + viss}
    if len(shapes) != 1:
        raise ToolError(f"frames of the clips differ in size: {sorted(shapes)}")
    mask = np.array(holdout)
    frames = Frames(np.stack(irs), np.stack(viss), np.flatnonzero(~mask), np.flatnonzero(mask))
    return frames, record


def _to_tensor(images: list[np.ndarray]) -> Tensor:
    return torch.from_numpy(np.stack(images)[:, None].astype(np.float32) / 255.0)


def sample_batch(
    frames: Frames, rng: np.random.Generator, batch: int, crop: int
) -> tuple[Tensor, Tensor]:
    """``batch`` random crops (frame, position, horizontal flip) of training frames."""
    height, width = frames.ir.shape[1:]
    irs, viss = [], []
    for _ in range(batch):
        k = frames.train[rng.integers(len(frames.train))]
        y, x = rng.integers(height - crop + 1), rng.integers(width - crop + 1)
        flip = bool(rng.integers(2))
        for source, out in ((frames.ir, irs), (frames.vis, viss)):
            patch = source[k, y : y + crop, x : x + crop]
            out.append(patch[:, ::-1] if flip else patch)
    return _to_tensor(irs), _to_tensor(viss)


def holdout_batch(frames: Frames, crop: int) -> tuple[Tensor, Tensor]:
    """Centre crops of the held-out frames: the fixed validation set."""
    height, width = frames.ir.shape[1:]
    y, x = (height - crop) // 2, (width - crop) // 2
    picks = frames.holdout
    return (
        _to_tensor([frames.ir[k, y : y + crop, x : x + crop] for k in picks]),
        _to_tensor([frames.vis[k, y : y + crop, x : x + crop] for k in picks]),
    )


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
    weights = LossWeights(args.w_gradient, args.w_ssim, stage1, args.distill)
    frames, data = load_frames(args.m3svd, args.clips, args.holdout_every)
    if min(frames.ir.shape[1:]) < args.crop:
        raise ToolError(f"crop {args.crop} is larger than the frames {frames.ir.shape[1:]}")
    val_ir, val_vis = holdout_batch(frames, args.val_crop)
    teacher = _teacher(args.gifnet_weights) if weights.distill else None

    model = TIM(args.variant)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    metadata: dict[str, Any] = {
        "what": f"TIM {args.variant} weights trained by gifnet_ros (not the TIM authors' weights)",
        "licence": "MIT (gifnet_ros); trained on M3SVD clips (Tang et al., MIT licence)",
        "command": command,
        "seed": args.seed,
        "data": data,
        "train_frames": len(frames.train),
        "holdout_frames": len(frames.holdout),
        "holdout_every": args.holdout_every,
        "steps": args.steps,
        "batch": args.batch,
        "crop": args.crop,
        "lr": args.lr,
        "warmup": args.warmup,
        "schedule": "Adam; linear warm-up, cosine decay to 1% of lr",
        "loss": "L(F) = |F-max(ir,vis)|_1 + w_gradient*| |grad F| - max(|grad ir|,|grad vis|) |_1"
        " + w_ssim*(1-(SSIM(F,ir)+SSIM(F,vis))/2) on the output, + w_stage1*L(stage 1 output)"
        " + w_distill*|F-GIFNet|_1; Sobel gradients, SSIM 11x11 Gaussian sigma 1.5",
        "loss_weights": asdict(weights),
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    metadata["validation_loss_before"] = validation_loss(model, val_ir, val_vis, weights)
    curve: list[list[float]] = []
    recent: list[float] = []
    start = time.monotonic()
    bar = tqdm(range(args.steps), desc=PROG, unit="step", disable=None if args.progress else True)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, args.warmup)
        ir, vis = sample_batch(frames, rng, args.batch, args.crop)
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
            progress = {"steps_done": done, "loss_curve": curve, "complete": False}
            save(args.output, model, {**metadata, **progress})
    metadata["wall_seconds"] = round(time.monotonic() - start, 1)
    metadata["loss_curve"] = curve
    metadata["final_loss"] = curve[-1][1]
    metadata["validation_loss_after"] = validation_loss(model, val_ir, val_vis, weights)
    metadata["steps_done"] = args.steps
    metadata["complete"] = True
    save(args.output, model, metadata)
    return metadata
