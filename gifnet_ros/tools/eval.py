"""`gifnet-eval` (`ros2 run gifnet_ros eval`):
fuse image pairs with several methods and report every metric (``gifnet_ros.offline.evaluate``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gifnet_ros.fusion.image_files import ImageFileError, pair_folders
from gifnet_ros.models.weights import WeightsError
from gifnet_ros.offline import evaluate
from gifnet_ros.offline.holdout import held_out
from gifnet_ros.tools.engine_args import add_engine_arguments, engine_options


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=evaluate.PROG,
        description="Fuse every same-named thermal/visible pair of two folders with each method "
        "and write a metrics table (CSV and Markdown) and PNG contact sheets.",
    )
    p.add_argument("ir_dir", type=Path, help="folder of thermal (infrared) images")
    p.add_argument("vis_dir", type=Path, help="folder of visible (RGB) images")
    p.add_argument("-o", "--output", type=Path, required=True, help="report folder")
    p.add_argument(
        "--methods",
        default=",".join(evaluate.DEFAULT_METHODS),
        help=f"comma-separated methods out of {','.join(evaluate.ALL_METHODS)}, in any mix and "
        "order, one table row each; every network runs with the engine flags below (default: "
        "%(default)s; with --network N, a list's gifnet is read as N)",
    )
    p.add_argument(
        "--held-out",
        action="store_true",
        help="evaluate only the pairs TIM's training holds out for validation (decided by "
        "name, gifnet_ros.offline.holdout), so TIM is measured on scenes it never trained on",
    )
    p.add_argument(
        "--limit",
        type=int,
        help="evaluate only the first N pairs (in name order, after --held-out)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    # The engine flags configure every network method; the classical ones run on the CPU.
    add_engine_arguments(p, backends=evaluate.NETWORK_BACKENDS, batch=False)
    # None tells an explicit --network (the one-network form, evaluate.with_network) apart.
    p.set_defaults(network=None)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation; exit status 0 all pairs evaluated, 1 some pair failed or an error,
    2 bad usage."""
    args = parser().parse_args(argv)
    try:
        methods = evaluate.parse_methods(args.methods)
        if args.network is not None:
            methods = evaluate.with_network(methods, args.network)
        given = (("--weights", args.weights), ("--onnx-model", args.onnx_model))
        evaluate.check_network_files(methods, [flag for flag, value in given if value])
    except ValueError as exc:
        print(f"{evaluate.PROG}: {exc}", file=sys.stderr)
        return 2
    if args.limit is not None and args.limit < 1:
        print(f"{evaluate.PROG}: --limit must be at least 1, got {args.limit}", file=sys.stderr)
        return 2
    try:
        found = pair_folders(args.ir_dir, args.vis_dir)
    except ImageFileError as exc:
        print(f"{evaluate.PROG}: {exc}", file=sys.stderr)
        return 2
    source = f"{args.ir_dir} | {args.vis_dir}"
    pairs = found.pairs
    if args.held_out:
        pairs = [pair for pair in pairs if held_out(pair[0].stem)]
        if found.pairs and not pairs:
            print(
                f"{evaluate.PROG}: none of the {len(found.pairs)} pairs in {args.ir_dir} and "
                f"{args.vis_dir} is held out of TIM's training (gifnet_ros.offline.holdout)",
                file=sys.stderr,
            )
            return 1
        source += (
            f"; only the pairs TIM's training holds out (gifnet_ros.offline.holdout): "
            f"{len(pairs)} of {len(found.pairs)}"
        )
    pairs = pairs[: args.limit] if args.limit else pairs
    if not pairs:
        print(
            f"{evaluate.PROG}: no same-named image pairs in {args.ir_dir} and {args.vis_dir}",
            file=sys.stderr,
        )
        return 1
    for path in found.only_first + found.only_second:
        print(f"{evaluate.PROG}: {path}: no partner with the same name, skipped", file=sys.stderr)
    try:
        fusers = evaluate.build_fusers(methods, engine_options(args))
    except (WeightsError, ValueError) as exc:
        print(f"{evaluate.PROG}: {exc}", file=sys.stderr)
        return 1
    failures = evaluate.evaluate_pairs(pairs, fusers, args.output, source, args.quiet)
    print(
        f"{evaluate.PROG}: {len(pairs) - failures} of {len(pairs)} pairs evaluated with "
        f"{', '.join(methods)}; report in {args.output}"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
