"""`gifnet-train-tim` (`ros2 run gifnet_ros train_tim`): train TIM weights on the shared data
(``gifnet_ros.offline.train_tim``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from gifnet_ros.models.tim import VARIANTS
from gifnet_ros.offline.bag_io import ToolError
from gifnet_ros.offline.train_tim import DEFAULT_CLIPS, PROG, Augment, LossWeights, train
from gifnet_ros.tools.arg_types import positive_int


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train TIM (gifnet_ros.models.tim) on M3SVD frames and RoadScene pairs, "
        "unsupervised, on the CPU; see docs/tim.md. The result is this project's weights, "
        "not the authors'.",
    )
    parser.add_argument("output", type=Path, help="weights file to write (.pt)")
    parser.add_argument(
        "--m3svd",
        type=Path,
        default=Path("../shared/data/m3svd"),
        help="M3SVD folder with infrared/ and visible/ videos (default %(default)s)",
    )
    parser.add_argument(
        "--clips",
        nargs="*",
        default=list(DEFAULT_CLIPS),
        metavar="CLIP",
        help="M3SVD clips to train on; none: no video frames (default %(default)s)",
    )
    parser.add_argument(
        "--roadscene",
        type=Path,
        default=Path("../shared/data/roadscene"),
        help="folder with ir/ and vis/ image pairs; the pairs gifnet_ros.offline.holdout "
        "names are held out (default %(default)s)",
    )
    parser.add_argument(
        "--no-roadscene",
        dest="roadscene",
        action="store_const",
        const=None,
        help="train on the clips alone",
    )
    parser.add_argument(
        "--variant", choices=VARIANTS, default="ivif", help="TIM variant (default %(default)s)"
    )
    parser.add_argument("--steps", type=positive_int, default=450)
    parser.add_argument("--batch", type=positive_int, default=4)
    parser.add_argument("--crop", type=positive_int, default=96, help="crop side in pixels")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--w-gradient", type=float, default=LossWeights.gradient)
    parser.add_argument("--w-ssim", type=float, default=LossWeights.ssim)
    parser.add_argument("--w-stage1", type=float, default=LossWeights.stage1)
    parser.add_argument(
        "--intensity-max",
        type=float,
        default=LossWeights.intensity_max,
        help="share of max(ir, vis) in the intensity target, the rest the mean "
        "(default %(default)s)",
    )
    for name, value, what in (
        ("max-scale", Augment.max_scale, "largest crop side drawn, in crops (resized to --crop)"),
        ("vflip", Augment.vflip, "chance of a vertical flip"),
        ("contrast", Augment.contrast, "contrast jitter, a fraction"),
        ("brightness", Augment.brightness, "brightness jitter, a fraction of full scale"),
        ("invert", Augment.invert, "chance of black-hot thermal"),
    ):
        parser.add_argument(
            f"--{name}", type=float, default=value, help=f"{what} (default %(default)s)"
        )
    parser.add_argument(
        "--distill",
        type=float,
        default=0.0,
        help="weight of an L1 term towards GIFNet's output (needs its checkpoint; default 0)",
    )
    parser.add_argument("--gifnet-weights", help="GIFNet checkpoint for --distill")
    parser.add_argument("--holdout-every", type=positive_int, default=10)
    parser.add_argument("--val-crop", type=positive_int, default=128)
    parser.add_argument("--log-every", type=positive_int, default=10)
    parser.add_argument("--save-every", type=positive_int, default=50)
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``gifnet-train-tim``; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    for name, value in (("--crop", args.crop), ("--val-crop", args.val_crop)):
        if value < 8 or value % 4:
            print(f"{PROG}: error: {name} must be a multiple of 4, at least 8", file=sys.stderr)
            return 2
    if not args.lr > 0:
        print(f"{PROG}: error: --lr must be positive, got {args.lr}", file=sys.stderr)
        return 2
    # Process-wide in PyTorch: restored afterwards for callers that run main() in-process.
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        metadata = train(args, " ".join([PROG, *argv]))
    except (ToolError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"{PROG}: interrupted; {args.output} holds the last saved state, if any",
            file=sys.stderr,
        )
        return 130
    finally:
        torch.set_num_threads(threads)
    print(
        f"{PROG}: wrote {args.output}: {metadata['steps_done']} steps in "
        f"{metadata['wall_seconds']:.0f} s, final loss {metadata['final_loss']:.4f}, "
        f"validation loss {metadata['validation_loss_before']:.4f} -> "
        f"{metadata['validation_loss_after']:.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
