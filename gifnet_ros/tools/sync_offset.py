"""`gifnet-sync-offset` (`ros2 run gifnet_ros sync_offset`):
estimate a thermal camera's clock offset from a bag (``gifnet_ros.offline.sync_offset``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gifnet_ros.offline import sync_offset
from gifnet_ros.offline.bag_io import ToolError
from gifnet_ros.offline.make_bag import RGB_TOPIC, THERMAL_TOPIC
from gifnet_ros.tools.arg_types import positive_float, width_height


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=sync_offset.PROG,
        description=f"Estimate the constant clock offset between a thermal and an RGB camera "
        f"from a rosbag2 with motion in both streams, and print the {sync_offset.PARAMETER} node "
        "parameter that corrects it (seconds added to every thermal stamp before pairing).",
        epilog="Exit status: 0 with the estimate, 1 on an error (one line): a missing bag or "
        "topic, too few frames, no motion, or no clear correlation peak.",
    )
    p.add_argument("bag", type=Path, help="rosbag2 directory or a single .mcap / .db3 file")
    p.add_argument(
        "--thermal-topic",
        default=THERMAL_TOPIC,
        help="Image or CompressedImage topic (default %(default)s, or its /compressed form)",
    )
    p.add_argument(
        "--rgb-topic",
        default=RGB_TOPIC,
        help="Image or CompressedImage topic (default %(default)s, or its /compressed form)",
    )
    p.add_argument(
        "--max-offset",
        type=positive_float,
        default=sync_offset.DEFAULT_MAX_OFFSET,
        help="largest offset searched, in seconds either way (default %(default)s)",
    )
    p.add_argument(
        "--size",
        type=width_height,
        default=sync_offset.DEFAULT_SIZE,
        metavar="WxH",
        help="frames are shrunk to this size before differencing (default "
        f"{sync_offset.DEFAULT_SIZE[0]}x{sync_offset.DEFAULT_SIZE[1]})",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; exit status 0 with the estimate, 1 on an error (one line), 130
    when interrupted."""
    args = parser().parse_args(argv)
    try:
        thermal, rgb = sync_offset.bag_signals(
            args.bag, args.thermal_topic, args.rgb_topic, args.size
        )
        for role, signal in (("thermal", thermal), ("RGB", rgb)):
            if signal.skipped:
                print(
                    f"{sync_offset.PROG}: warning: {signal.skipped} {role} message(s) skipped: "
                    "stamp not after the one before",
                    file=sys.stderr,
                )
        estimate = sync_offset.correlate(thermal, rgb, args.max_offset)
    except (ToolError, OSError) as exc:
        print(f"{sync_offset.PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{sync_offset.PROG}: interrupted", file=sys.stderr)
        return 130
    print(sync_offset.report(estimate))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
