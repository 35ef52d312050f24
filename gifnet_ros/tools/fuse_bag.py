"""`gifnet-fuse-bag` (`ros2 run gifnet_ros fuse_bag`):
fuse the stamp-paired images of one recorded bag into a new bag (``gifnet_ros.offline.bag_fusion``).

The flags that say how a bag is fused are defined here once, for gifnet-fuse-bags as well
(``add_fusion_arguments``), and become one ``BagSettings`` (``bag_settings``).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

from gifnet_ros.fusion.align import METHODS as ALIGN_METHODS
from gifnet_ros.fusion.align import NO_CROP, Alignment, read_params_alignment
from gifnet_ros.fusion.engine import FusionEngine
from gifnet_ros.fusion.freeze import FREEZE_ACTIONS
from gifnet_ros.fusion.thermal import DEFAULT_TIME_CONSTANT
from gifnet_ros.offline.bag_fusion import PROG, fuse_bag
from gifnet_ros.offline.bag_io import STORAGES
from gifnet_ros.offline.bag_settings import (
    DEFAULT_SLOP,
    FUSED_ENCODINGS,
    FUSED_TOPIC,
    IDENTITY,
    BagSettings,
)
from gifnet_ros.tools.engine_args import (
    add_engine_arguments,
    add_thermal_arguments,
    engine_options,
)


def _params_alignment(text: str) -> Alignment:
    """--params-file: the alignment the file sets, read while the flags are parsed, so that a
    bad file is a usage error and remote workers never need the file."""
    try:
        return read_params_alignment(Path(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def bag_settings(args: argparse.Namespace) -> BagSettings:
    """The flags of add_fusion_arguments as one BagSettings; a --params-file's alignment
    takes the place of --align, --homography and --crop."""
    align, homography, crop = args.align, args.homography, args.crop
    if args.params_file is not None:
        alignment = args.params_file
        align, homography, crop = alignment.method, alignment.homography, alignment.crop
    return BagSettings(
        thermal_topic=args.thermal_topic,
        rgb_topic=args.rgb_topic,
        fused_topic=args.fused_topic,
        fused_encoding=args.fused_encoding,
        slop=args.slop,
        storage=args.storage,
        copy_topics=args.copy_topics,
        engine=dataclasses.replace(engine_options(args), mode=args.mode),
        batch=args.batch,
        align=align,
        homography=tuple(homography),
        crop=tuple(crop),
        thermal_norm=args.thermal_norm,
        thermal_percentiles=tuple(args.thermal_percentiles),
        thermal_range=tuple(args.thermal_range),
        thermal_time_constant=args.thermal_time_constant,
        thermal_offset=args.thermal_offset,
        freeze_action=args.freeze_action,
        freeze_max_age=args.freeze_max_age,
        fused_compressed=args.fused_compressed,
        jpeg_quality=args.jpeg_quality,
        skip_bad=args.skip_bad,
    )


def add_fusion_arguments(p: argparse.ArgumentParser) -> None:
    """The options that say how a bag is fused (topics, output bag, alignment, engine): one
    definition for gifnet-fuse-bag and gifnet-fuse-bags, so they mean the same in both."""
    p.add_argument("--thermal-topic", required=True, help="Image or CompressedImage topic")
    p.add_argument("--rgb-topic", required=True, help="Image or CompressedImage topic")
    p.add_argument("--fused-topic", default=FUSED_TOPIC, help="default %(default)s")
    p.add_argument(
        "--fused-encoding",
        choices=FUSED_ENCODINGS,
        default="rgb8",
        help="mono8 writes the fused luminance (default %(default)s)",
    )
    p.add_argument(
        "--slop",
        type=float,
        default=DEFAULT_SLOP,
        help="largest stamp difference in seconds of a pair (default %(default)s)",
    )
    p.add_argument(
        "--thermal-offset",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="added to every thermal stamp before pairing, as the node's sync.thermal_offset "
        "(a host-stamped thermal camera that lags by L s needs -L; gifnet-sync-offset BAG "
        "estimates it); the fused image keeps the RGB header (default %(default)s)",
    )
    p.add_argument(
        "--thermal-time-constant",
        type=float,
        default=DEFAULT_TIME_CONSTANT,
        metavar="SECONDS",
        help="the percentile stretch of 16-bit/float thermal follows the scene over this "
        "time, in stamp order, as the node's thermal.time_constant; 0: each frame on its own "
        "(default %(default)s)",
    )
    p.add_argument(
        "--freeze-action",
        choices=FREEZE_ACTIONS,
        default="skip",
        help="a thermal image that repeats the one before (a shutter pause): skip the pair "
        "(reported), hold (fuse it while at most --freeze-max-age old), or ignore; as the "
        "node's thermal.freeze_action (default %(default)s)",
    )
    p.add_argument(
        "--freeze-max-age",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="--freeze-action hold: oldest repeated thermal image fused (default %(default)s)",
    )
    p.add_argument(
        "--fused-compressed",
        choices=("jpeg", "png"),
        default=None,
        help="also write FUSED_TOPIC/compressed (sensor_msgs/CompressedImage), as "
        "image_transport's compressed transport would",
    )
    p.add_argument(
        "--jpeg-quality",
        type=int,
        default=95,
        help="JPEG quality of --fused-compressed jpeg, 1..100 (default %(default)s)",
    )
    p.add_argument(
        "--storage",
        choices=tuple(STORAGES),
        default="mcap",
        help="storage of the output bag (default %(default)s; on Humble, playing "
        "mcap needs ros-humble-rosbag2-storage-mcap)",
    )
    p.add_argument(
        "--copy-topics",
        default="all",
        metavar="all|none|LIST",
        help="input topics copied unchanged: all (default), none, or a comma-separated list",
    )
    p.add_argument("--mode", choices=FusionEngine.MODES, default="thermal_rgb")
    p.add_argument(
        "--align",
        choices=ALIGN_METHODS,
        default="resize",
        help="put the thermal image on the RGB grid as the node does (default %(default)s)",
    )
    p.add_argument(
        "--homography",
        type=float,
        nargs=9,
        metavar="H",
        default=IDENTITY,
        help="3x3 row-major thermal->RGB pixel mapping for --align homography",
    )
    p.add_argument(
        "--crop",
        type=int,
        nargs=4,
        metavar=("X", "Y", "W", "H"),
        default=NO_CROP,
        help="cut this box from the thermal image first, as the node's align.crop (default none)",
    )
    p.add_argument(
        "--params-file",
        type=_params_alignment,
        metavar="YAML",
        help="take align.method, align.homography and align.crop from a node parameter file "
        "(e.g. gifnet-calibrate's output) instead of --align, --homography and --crop",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip (and report) pairs with an undecodable image instead of stopping",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_engine_arguments(p)
    add_thermal_arguments(p)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Fuse every thermal/RGB pair of a rosbag2 (directory, .mcap or .db3) with "
        "GIFNet and write a new bag with the fused images (sensor_msgs/Image) and the copied "
        "input topics. Pairs by header.stamp: nearest first within --slop, each message at "
        "most once.",
        epilog="Exit status: 0 when the bag is complete, 1 on an error, 130 when interrupted; "
        "on 1 and 130 nothing is written to OUTPUT (the --report is written in every case).",
    )
    p.add_argument("input", type=Path, help="rosbag2 directory or a single .mcap / .db3 file")
    p.add_argument("-o", "--output", type=Path, required=True, help="bag directory to create")
    p.add_argument("--report", type=Path, help="also write the report as JSON to this file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT bag")
    add_fusion_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; exit status 0 on success, 1 on an error, 130 when interrupted."""
    args = parser().parse_args(argv)
    return fuse_bag(
        args.input,
        args.output,
        bag_settings(args),
        overwrite=args.overwrite,
        report=args.report,
        show_progress=not args.no_progress,
    )


if __name__ == "__main__":
    raise SystemExit(main())
