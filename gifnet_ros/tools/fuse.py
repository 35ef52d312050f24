"""gifnet-fuse: fuse an image pair, or every same-named pair of two folders, from the shell.

    gifnet-fuse THERMAL.png RGB.jpg -o fused.png
    gifnet-fuse ir_dir/ vis_dir/ -o fused_dir/

Folder pairs are matched by file name (the extension may differ); files
without a partner are listed, and every pair that could not be fused is
reported with its reason, while the rest are still fused. Consecutive pairs of
one size are fused ``--batch`` at a time (FusionEngine.fuse_batch). Outputs are
written atomically. Exit status: 0 all fused, 1 something was not fused or an error,
2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gifnet_ros.fusion.align import Alignment
from gifnet_ros.fusion.engine import CHROMA_RULES, MODES, FusionEngine
from gifnet_ros.fusion.image_files import ImageFileError, pair_folders, read_image, write_image
from gifnet_ros.models.weights import WeightsError
from gifnet_ros.tools.engine_args import (
    add_engine_arguments,
    add_thermal_arguments,
    engine_options,
)

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


def _read_pair(first: Path, second: Path, resize: bool) -> tuple[np.ndarray, np.ndarray]:
    a, b = read_image(first), read_image(second)
    if resize:
        a = Alignment().apply(a, b.shape)  # resize to the second's size, as the node does
    return a, b


class _Batcher:
    """Collects read pairs of one size and fuses them ``size`` at a time; a batch that fails
    is fused pair by pair, so that only the pairs at fault are reported."""

    def __init__(self, engine: FusionEngine, size: int, failures: list[str]) -> None:
        self.engine, self.size, self.failures = engine, size, failures
        self.pending: list[tuple[Path, Path, Path, np.ndarray, np.ndarray]] = []
        self.fused = 0

    def add(self, first: Path, second: Path, out: Path, a: np.ndarray, b: np.ndarray) -> None:
        if self.pending and self.pending[0][3].shape[:2] != a.shape[:2]:
            self.flush()
        self.pending.append((first, second, out, a, b))
        if len(self.pending) >= self.size:
            self.flush()

    def flush(self) -> None:
        jobs, self.pending = self.pending, []
        if not jobs:
            return
        try:
            results = self.engine.fuse_batch([(a, b) for *_, a, b in jobs])
        except ValueError:
            results = None
        for k, (first, second, out, a, b) in enumerate(jobs):
            try:
                write_image(out, results[k] if results is not None else self.engine.fuse(a, b))
                self.fused += 1
            except ValueError as exc:
                self.failures.append(f"{first.name} + {second.name}: {exc}")
            except ImageFileError as exc:
                self.failures.append(str(exc))


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
        engine_options(args),
        mode=args.mode,
        thermal_norm=args.thermal_norm,
        thermal_range=tuple(args.thermal_range),
        thermal_percentiles=tuple(args.thermal_percentiles),
        chroma_rule=args.chroma_rule,
    )
    if not args.first.is_dir():
        a, b = _read_pair(args.first, args.second, args.resize)
        try:
            fused = engine.fuse(a, b)
        except ValueError as exc:
            raise ImageFileError(f"{args.first.name} + {args.second.name}: {exc}") from None
        write_image(args.output, fused)
        return 0
    failures = [
        f"{p}: no partner of the same name" for p in matched.only_first + matched.only_second
    ]
    batcher = _Batcher(engine, args.batch or engine.default_batch(), failures)
    bar = tqdm(matched.pairs, unit="pair", desc=PROG, disable=args.quiet, file=sys.stderr)
    for first, second in bar:
        try:
            a, b = _read_pair(first, second, args.resize)
        except ImageFileError as exc:
            failures.append(str(exc))
            continue
        batcher.add(first, second, args.output / (first.stem + args.ext), a, b)
    batcher.flush()
    print(
        f"{PROG}: fused {batcher.fused} of {len(matched.pairs)} pairs into {args.output} "
        f"({engine.describe()})",
        file=sys.stderr,
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
