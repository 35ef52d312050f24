"""`gifnet-calibrate` (`ros2 run gifnet_ros calibrate`):
fit the thermal-to-RGB homography from checkerboard views (``gifnet_ros.offline.calibrate``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gifnet_ros.fusion.align import IDENTITY, NO_CROP, Alignment
from gifnet_ros.fusion.image_files import IMAGE_SUFFIXES
from gifnet_ros.offline import calibrate
from gifnet_ros.tools.engine_args import add_thermal_arguments


def parse_board(text: str) -> tuple[int, int]:
    """``COLSxROWS`` inner corners, e.g. ``9x6``; each at least 2 (argparse type)."""
    parts = text.lower().split("x")
    try:
        cols, rows = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--board {text!r}: expected COLSxROWS inner corners, e.g. 9x6"
        ) from None
    if cols < 2 or rows < 2:
        raise argparse.ArgumentTypeError(f"--board {text!r}: needs at least 2x2 inner corners")
    return cols, rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=calibrate.PROG,
        description="Estimate the homography that maps thermal pixels to RGB pixels from "
        "views of a checkerboard seen by both cameras, and write it as a fusion node "
        "parameter file (align.method: homography).",
        epilog="Exit status: 0 on success, 2 on an error (one line; nothing is written).",
    )
    source = p.add_argument_group("input: image files, or a bag")
    source.add_argument("--thermal", type=Path, nargs="+", metavar="FILE", help="thermal images")
    source.add_argument(
        "--rgb", type=Path, nargs="+", metavar="FILE", help="RGB images, in the thermal order"
    )
    source.add_argument("--bag", type=Path, help="rosbag2 directory, .mcap or .db3 file")
    source.add_argument("--thermal-topic", help="thermal Image or CompressedImage topic (--bag)")
    source.add_argument("--rgb-topic", help="RGB Image or CompressedImage topic (--bag)")
    source.add_argument(
        "--slop",
        type=float,
        default=calibrate.DEFAULT_SLOP,
        help="largest stamp difference in seconds of a pair (--bag; default %(default)s)",
    )
    source.add_argument(
        "--max-pairs",
        type=int,
        default=calibrate.DEFAULT_MAX_PAIRS,
        help="pairs of the bag examined, spread evenly over it (default %(default)s)",
    )
    p.add_argument("--board", type=parse_board, metavar="COLSxROWS", help="inner corners, e.g. 9x6")
    p.add_argument(
        "--crop",
        type=int,
        nargs=4,
        default=NO_CROP,
        metavar=("X", "Y", "W", "H"),
        help="cut this region from the thermal image first, as the node's align.crop",
    )
    p.add_argument(
        "--min-views",
        type=int,
        default=calibrate.DEFAULT_MIN_VIEWS,
        help="fewest views with the board found in both images (default %(default)s)",
    )
    p.add_argument("-o", "--output", type=Path, help="node parameter file to write (YAML)")
    p.add_argument("--preview", type=Path, metavar="PNG", help="also write a registration preview")
    p.add_argument(
        "--preview-style",
        choices=("checker", "blend"),
        default="checker",
        help="thermal and RGB in alternating squares (default) or blended",
    )
    p.add_argument(
        "--flags-from",
        type=Path,
        metavar="YAML",
        help="only print the gifnet-fuse-bag flags for a parameter file this tool wrote",
    )
    add_thermal_arguments(p)
    return p


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse incomplete or contradictory arguments before any image is read."""
    files = args.thermal is not None or args.rgb is not None
    if files == (args.bag is not None):
        raise calibrate.CalibrationError("give either --thermal FILES --rgb FILES, or --bag BAG")
    if files and (args.thermal is None or args.rgb is None):
        raise calibrate.CalibrationError("--thermal and --rgb must both be given")
    if args.bag is not None and not (args.thermal_topic and args.rgb_topic):
        raise calibrate.CalibrationError("--bag needs --thermal-topic and --rgb-topic")
    if args.board is None:
        raise calibrate.CalibrationError("--board COLSxROWS is required (inner corners, e.g. 9x6)")
    if args.output is None:
        raise calibrate.CalibrationError("-o/--output FILE.yaml is required")
    for path in (args.output, args.preview):
        if path is not None and not path.parent.is_dir():
            raise calibrate.CalibrationError(f"{path.parent}: output directory does not exist")
    if args.preview is not None and args.preview.suffix.lower() not in IMAGE_SUFFIXES:
        raise calibrate.CalibrationError(
            f"--preview {args.preview}: not an image file name "
            f"({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    if args.min_views < 1:
        raise calibrate.CalibrationError(f"--min-views must be at least 1, got {args.min_views}")
    if args.max_pairs < 1:
        raise calibrate.CalibrationError(f"--max-pairs must be at least 1, got {args.max_pairs}")
    if not args.slop >= 0:
        raise calibrate.CalibrationError(f"--slop must be >= 0 seconds, got {args.slop}")
    try:
        Alignment.create("homography", IDENTITY, args.crop)
        # The thermal flags are checked by converting a dummy frame with them.
        calibrate.thermal_grey(np.zeros((2, 2), np.uint16), NO_CROP, args)
    except ValueError as exc:
        raise calibrate.CalibrationError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; exit status 0 on success, 2 on an error (one line)."""
    args = parser().parse_args(argv)
    try:
        if args.flags_from is not None:
            print(" ".join(calibrate.fuse_bag_flags(calibrate.read_params(args.flags_from))))
        else:
            check_arguments(args)
            calibrate.run(args)
    except (calibrate.CalibrationError, OSError) as exc:
        print(f"{calibrate.PROG}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
