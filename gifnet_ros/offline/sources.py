"""Thermal/RGB frame pairs to play into the fusion node: two videos, an M3SVD clip, a bag.

``gifnet-demo`` streams these over DDS; the node tests and benchmarks use the same sources,
so the frames a test compares against are the frames the demo sends. Everything here is
numpy arrays (thermal grey or 16-bit, RGB in RGB order); no ROS. Problems are ToolError with
a one-line message.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from gifnet_ros.offline.bag_io import ToolError
from gifnet_ros.offline.bag_reader import BagReadError, PairedBagReader
from gifnet_ros.offline.make_bag import rgb_pixels, source_pairs, thermal_pixels

ENV_SHARED = "GIFNET_SHARED"

PixelPair = tuple[np.ndarray, np.ndarray]
"""(thermal, RGB) pixels of one instant."""


def find_shared() -> Path | None:
    """The shared data folder: ``$GIFNET_SHARED``, else ``shared`` beside or inside the working
    directory (the README runs the demo from the checkout, with ``../shared`` beside it).
    Where the package is installed says nothing about where the data is, so it is not asked."""
    env = os.environ.get(ENV_SHARED, "").strip()
    if env:
        return Path(env).expanduser()
    for candidate in (Path.cwd().parent / "shared", Path.cwd() / "shared"):
        if (candidate / "data").is_dir():
            return candidate
    return None


def resize_pair(thermal: np.ndarray, rgb: np.ndarray, size: tuple[int, int] | None) -> PixelPair:
    """Scale both images to ``size`` (width, height); area averaging keeps detail when shrinking."""
    if size is None:
        return thermal, rgb
    return (
        cv2.resize(thermal, size, interpolation=cv2.INTER_AREA),
        cv2.resize(rgb, size, interpolation=cv2.INTER_AREA),
    )


def video_pairs(
    thermal_video: Path,
    rgb_video: Path,
    frames: int,
    size: tuple[int, int] | None = None,
    every: int = 1,
) -> list[PixelPair]:
    """Frames 0, every, 2*every... of two frame-synchronous videos as (grey thermal, RGB) pairs.

    Read as ``gifnet-make-bag`` reads them: the thermal frame becomes ``mono8`` grey, as a
    thermal camera would send it, the visible one RGB.
    """
    pairs: list[PixelPair] = []
    for index, (thermal, rgb) in enumerate(source_pairs(thermal_video, rgb_video)):
        if len(pairs) == frames:
            break
        if index % every == 0:
            pairs.append(resize_pair(thermal_pixels(thermal, "mono8"), rgb_pixels(rgb), size))
    if not pairs:
        raise ToolError(f"no frames could be read from {thermal_video} and {rgb_video}")
    return pairs


def m3svd_pairs(
    clip: str, frames: int, size: tuple[int, int] | None, every: int, shared: Path | None = None
) -> list[PixelPair]:
    """Pairs from the shared M3SVD clip ``clip`` (infrared/ and visible/ videos)."""
    shared = find_shared() if shared is None else shared
    if shared is None:
        raise ToolError(
            f"shared data not found (set ${ENV_SHARED}, or pass --thermal-video/--rgb-video "
            "or --bag)"
        )
    base = shared / "data" / "m3svd"
    thermal, rgb = base / "infrared" / f"{clip}.mp4", base / "visible" / f"{clip}.mp4"
    for path in (thermal, rgb):
        if not path.is_file():
            raise ToolError(f"M3SVD video {path} not found")
    return video_pairs(thermal, rgb, frames, size, every)


def bag_pairs(
    bag: Path,
    thermal_topic: str,
    rgb_topic: str,
    frames: int,
    size: tuple[int, int] | None,
    slop: float = 0.05,
) -> list[PixelPair]:
    """The first ``frames`` stamp-matched pairs of a rosbag2 (Image or CompressedImage topics),
    paired as ``gifnet-fuse-bag`` pairs them; a problem is a one-line BagReadError."""
    with PairedBagReader(bag, thermal_topic, rgb_topic) as reader:
        first = range(min(frames, len(reader.pair(slop).pairs)))
        found = {pair.seq: pair for pair in reader.read_pairs(first)}
    if not found:
        raise BagReadError(f"bag {bag}: no {thermal_topic}/{rgb_topic} pairs within {slop} s")
    source = f"bag {bag}"
    return [
        resize_pair(found[seq].thermal.decode(source)[1], found[seq].rgb.decode(source)[1], size)
        for seq in first
    ]
