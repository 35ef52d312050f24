"""`gifnet-fuse-bags` (`ros2 run gifnet_ros fuse_bags`):
fuse many bags, on this machine or a Ray cluster (``gifnet_ros.offline.fleet``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from gifnet_ros.offline.fleet import SUMMARY, FleetSettings, fuse_bags
from gifnet_ros.offline.fleet_cluster import PROG
from gifnet_ros.tools.fuse_bag import add_fusion_arguments, bag_settings


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Fuse many rosbag2 bags over a Ray cluster (by default the one ray start "
        "started here, else one started in this process): every INPUT becomes OUT_DIR/NAME, "
        "the bag gifnet-fuse-bag writes for it with the same options, plus "
        "OUT_DIR/NAME.report.json and one " + SUMMARY + ".",
        epilog="Exit status: 0 when every bag is fused (or was already), 1 when any is not, "
        "130 when interrupted. A second run skips the bags that are complete.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="INPUT",
        help="rosbag2 directory, .mcap or .db3 file, or a folder searched for them",
    )
    p.add_argument("-o", "--output-dir", type=Path, required=True, help="folder for the outputs")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="fuse again the bags whose output is complete (default: skip them)",
    )
    add_fusion_arguments(p)
    cluster = p.add_argument_group("Ray cluster")
    cluster.add_argument(
        "--address",
        help="the Ray cluster to join: HOST:PORT, ray://HOST:PORT, or auto (RAY_ADDRESS, "
        "else the cluster ray start started or joined on this machine); local starts a private "
        "Ray in this process with this machine's CPUs and GPUs (default: auto where there is "
        "such a cluster, else local)",
    )
    cluster.add_argument(
        "--workers",
        type=int,
        help="model workers (default: one per GPU, else one per CPU, each using --threads CPUs)",
    )
    cluster.add_argument(
        "--gpus-per-worker",
        type=float,
        help="GPUs each model worker reserves, fractions allowed (default: 1 where the "
        "cluster has GPUs, else 0)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; 0 when every bag is fused, 1 when any is not, 130 on Ctrl-C."""
    args = parser().parse_args(argv)
    return fuse_bags(
        FleetSettings(
            inputs=tuple(args.inputs),
            output_dir=args.output_dir,
            bag=bag_settings(args),
            overwrite=args.overwrite,
            address=args.address,
            workers=args.workers,
            gpus_per_worker=args.gpus_per_worker,
            progress=not args.no_progress,
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
