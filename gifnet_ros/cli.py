"""gifnet-fuse: fuse an image pair, or every same-named pair of two folders, from the shell.

    gifnet-fuse THERMAL.png RGB.jpg -o fused.png
    gifnet-fuse ir_dir/ vis_dir/ -o fused_dir/

Folder pairs are matched by file name (the extension may differ); files
without a partner are listed, and every pair that could not be fused is
reported with its reason, while the rest are still fused. Outputs are written
atomically. Exit status: 0 all fused, 1 something was not fused or an error,
2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from gifnet_ros.align import Alignment
from gifnet_ros.engine import CHROMA_RULES, MODES, FusionEngine
from gifnet_ros.engine_args import add_engine_arguments, add_thermal_arguments, engine_options
from gifnet_ros.image_files import ImageFileError, pair_folders, read_image, write_image
from gifnet_ros.weights import WeightsError

PROG = "gifnet-fuse"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Fuse a thermal (or NIR, PET, near-focus ...) image with a visible image "
        "using GIFNet. FIRST and SECOND are two image files, or two folders whose images are "
        "paired by file name.",
    )
    p.add_argument("first", type=Path, help="thermal image or folder (the network's first input)")
    p.add_argument("second", type=Path, help="visible image or folder (the second input)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output file, or folder")
    p.add_argument("--mode", choices=MODES, default="thermal_rgb", help="fusion task")
    p.add_argument("--chroma-rule", choices=CHROMA_RULES, default="neutral")
    p.add_argument(
        "--resize",
        action="store_true",
        help="resize the first image to the second's size when they differ "
        "(default: a size mismatch is an error)",
    )
    p.add_argument("--ext", default=".png", help="output extension in folder mode (default .png)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_engine_arguments(p)
    add_thermal_arguments(p)
    return p


def _fuse_files(engine: FusionEngine, first: Path, second: Path, out: Path, resize: bool) -> None:
    a, b = read_image(first), read_image(second)
    if resize:
        a = Alignment().apply(a, b.shape)  # resize to the second's size, as the node does
    try:
        fused = engine.fuse(a, b)
    except ValueError as exc:
        raise ImageFileError(f"{first.name} + {second.name}: {exc}") from None
    write_image(out, fused)


def _run(args: argparse.Namespace) -> int:
    if args.first.is_dir() != args.second.is_dir():
        raise ImageFileError(f"{args.first} and {args.second}: give two files or two folders")
    if args.first.is_dir():
        matched = pair_folders(args.first, args.second)
        if not matched.pairs:
            raise ImageFileError(f"{args.first} and {args.second} have no image names in common")
        args.output.mkdir(parents=True, exist_ok=True)
    else:
        for path in (args.first, args.second):
            if not path.is_file():
                raise ImageFileError(f"{path}: no such file")
    engine = FusionEngine(
        **engine_options(args),
        mode=args.mode,
        thermal_norm=args.thermal_norm,
        thermal_range=tuple(args.thermal_range),
        thermal_percentiles=tuple(args.thermal_percentiles),
        chroma_rule=args.chroma_rule,
    )
    if not args.first.is_dir():
        _fuse_files(engine, args.first, args.second, args.output, args.resize)
        return 0
    failures = [
        f"{p}: no partner of the same name" for p in matched.only_first + matched.only_second
    ]
    fused = 0
    bar = tqdm(matched.pairs, unit="pair", desc=PROG, disable=args.quiet, file=sys.stderr)
    for first, second in bar:
        try:
            _fuse_files(engine, first, second, args.output / (first.stem + args.ext), args.resize)
            fused += 1
        except ImageFileError as exc:
            failures.append(str(exc))
    print(
        f"{PROG}: fused {fused} of {len(matched.pairs)} pairs into {args.output}", file=sys.stderr
    )
    for line in failures:
        print(f"{PROG}: not fused: {line}", file=sys.stderr)
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return _run(args)
    except (ImageFileError, WeightsError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
