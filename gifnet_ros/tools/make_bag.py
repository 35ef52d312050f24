"""`gifnet-make-bag` (`ros2 run gifnet_ros make_bag`):
write a thermal/RGB test bag from videos or image folders (``gifnet_ros.offline.make_bag``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gifnet_ros.offline import make_bag as bag_maker
from gifnet_ros.offline.bag_io import STORAGES, ToolError, interrupt_on_sigterm
from gifnet_ros.tools.arg_types import nonnegative_float, positive_int, width_height


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=bag_maker.PROG,
        description="Build a rosbag2 with a thermal and an RGB image topic from two "
        "synchronized videos (frame k with frame k) or two image folders (paired by file name).",
        epilog="Example: gifnet-make-bag demo_bag --thermal ir.mp4 --rgb vis.mp4 "
        "--thermal-encoding mono16 --jitter-ms 3 --thermal-offset-ms 8",
    )
    p.add_argument("output", type=Path, help="bag directory to create")
    p.add_argument("--thermal", type=Path, required=True, help="thermal video or image folder")
    p.add_argument("--rgb", type=Path, required=True, help="RGB video or image folder")
    p.add_argument("--thermal-encoding", choices=("mono8", "mono16"), default="mono8")
    p.add_argument(
        "--rgb-encoding",
        choices=("rgb8", "bgr8"),
        default="rgb8",
        help="raw RGB encoding (ignored with --compressed)",
    )
    p.add_argument(
        "--compressed",
        choices=("jpeg", "png"),
        help="write sensor_msgs/CompressedImage in this format (mono16 needs png)",
    )
    p.add_argument(
        "--rate",
        type=float,
        help="frames per second (default: the video's, "
        f"{bag_maker.DEFAULT_FOLDER_RATE:g} for folders)",
    )
    p.add_argument(
        "--jitter-ms",
        type=nonnegative_float,
        default=0.0,
        help="uniform random stamp jitter, +- this many ms, per message",
    )
    p.add_argument(
        "--thermal-offset-ms", type=float, default=0.0, help="constant added to every thermal stamp"
    )
    p.add_argument(
        "--latency-ms",
        type=nonnegative_float,
        default=10.0,
        help="recording time minus stamp of every message (default 10)",
    )
    p.add_argument(
        "--start",
        type=float,
        default=bag_maker.DEFAULT_START,
        help="stamp of frame 0 in seconds since the epoch (default %(default).0f)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the jitter (default 0)")
    p.add_argument("--max-frames", type=positive_int, help="stop after this many frames")
    p.add_argument("--resize", type=width_height, metavar="WxH", help="resize both streams")
    p.add_argument("--storage", choices=tuple(STORAGES), default="mcap")
    p.add_argument("--thermal-topic", help=f"default {bag_maker.THERMAL_TOPIC}[/compressed]")
    p.add_argument("--rgb-topic", help=f"default {bag_maker.RGB_TOPIC}[/compressed]")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output bag")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; exit status 0 on success, 1 on an error, 130 when interrupted."""
    args = parser().parse_args(argv)
    interrupt_on_sigterm()
    try:
        count = bag_maker.make_bag(args)
    except ToolError as exc:
        print(f"{bag_maker.PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{bag_maker.PROG}: interrupted; {args.output} not written", file=sys.stderr)
        return 130
    kind = (
        f"CompressedImage ({args.compressed})"
        if args.compressed
        else (f"Image ({args.thermal_encoding} / {args.rgb_encoding})")
    )
    print(
        f"{bag_maker.PROG}: wrote {count} frame pairs as {kind} to {args.output} ({args.storage})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
