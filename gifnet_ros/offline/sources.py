"""Thermal/RGB frame pairs to play into the fusion node: two videos, an M3SVD clip, a bag.

``gifnet-demo`` streams these over DDS; the node tests and benchmarks use the same sources,
so the frames a test compares against are the frames the demo sends. Everything here is
numpy arrays (thermal grey or 16-bit, RGB in RGB order); no ROS. Problems are ToolError with
a one-line message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rosbags.highlevel import AnyReader

from gifnet_ros.fusion.conversion import ImageConversionError, compressed_to_array, image_to_array
from gifnet_ros.fusion.pairing import pair_by_stamp, stamp_to_ns
from gifnet_ros.offline.bag_io import ToolError, typestore
from gifnet_ros.offline.make_bag import rgb_pixels, source_pairs, thermal_pixels

ENV_SHARED = "GIFNET_SHARED"

PixelPair = tuple[np.ndarray, np.ndarray]
"""(thermal, RGB) pixels of one instant."""


def find_shared() -> Path | None:
    """The shared data folder: ``$GIFNET_SHARED``, else ``shared`` next to the checkout/cwd."""
    env = os.environ.get(ENV_SHARED, "").strip()
    if env:
        return Path(env).expanduser()
    for candidate in (
        Path.cwd().parent / "shared",
        Path.cwd() / "shared",
        Path(__file__).resolve().parents[3] / "shared",
    ):
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
    """The first ``frames`` stamp-matched pairs of a rosbag2 (Image or CompressedImage topics)."""
    topics = (thermal_topic, rgb_topic)

    def read(keep: dict[str, set[int]] | None) -> dict[str, dict[int, Any]]:
        """Per topic, index in recording order -> without ``keep`` every message's stamp, with
        it only the messages at those indices, so a long recording never sits in memory."""
        found: dict[str, dict[int, Any]] = {topic: {} for topic in topics}
        try:
            with AnyReader([bag], default_typestore=typestore()) as reader:
                connections = [c for c in reader.connections if c.topic in found]
                missing = set(topics) - {c.topic for c in connections}
                if missing:
                    present = sorted({c.topic for c in reader.connections})
                    raise ToolError(f"bag {bag} lacks topic(s) {sorted(missing)}; it has {present}")
                seen = dict.fromkeys(topics, 0)
                for connection, _, raw in reader.messages(connections=connections):
                    topic, index = connection.topic, seen[connection.topic]
                    seen[topic] += 1
                    if keep is None:
                        msg = reader.deserialize(raw, connection.msgtype)
                        found[topic][index] = stamp_to_ns(msg.header.stamp)
                    elif index in keep[topic]:
                        found[topic][index] = reader.deserialize(raw, connection.msgtype)
        except ToolError:
            raise
        except Exception as exc:  # rosbags raises several types for unreadable bags
            raise ToolError(f"cannot read bag {bag}: {exc}") from None
        return found

    stamps = read(None)
    rgb_stamps, thermal_stamps = (
        list(stamps[topic].values()) for topic in (rgb_topic, thermal_topic)
    )
    chosen = pair_by_stamp(thermal_stamps, rgb_stamps, round(slop * 1e9)).pairs[:frames]
    msgs = read({thermal_topic: {t for t, _ in chosen}, rgb_topic: {r for _, r in chosen}})
    pairs: list[PixelPair] = []
    for thermal_index, rgb_index in chosen:
        arrays = []
        for msg in (msgs[thermal_topic][thermal_index], msgs[rgb_topic][rgb_index]):
            convert = compressed_to_array if hasattr(msg, "format") else image_to_array
            try:
                arrays.append(convert(msg))
            except ImageConversionError as exc:
                raise ToolError(f"bag {bag}: {exc}") from None
        pairs.append(resize_pair(arrays[0], arrays[1], size))
    if not pairs:
        raise ToolError(f"bag {bag}: no {thermal_topic}/{rgb_topic} pairs within {slop} s")
    return pairs
