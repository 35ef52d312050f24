"""What a bag's thermal stream looks like over time, read once before fusing.

The live node sees thermal frames in stamp order and keeps state across them: it notices a
frozen camera (a frame byte-equal to the one before, e.g. a shutter pause) and smooths the
percentile stretch of 16-bit/float frames over ``thermal.time_constant``. A bag's pairs are
fused out of that order, and by several workers in gifnet-fuse-bags, so this pass computes the
same per-frame answers up front: each image costs a decode and a digest, and only a few
numbers per image are kept.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from gifnet_ros.fusion.thermal import frame_range, smoothed_ranges
from gifnet_ros.offline.bag_reader import BagReadError, PairedBagReader
from gifnet_ros.offline.bag_settings import BagSettings


@dataclass
class ThermalTimeline:
    """Per thermal message, by its index in recording order."""

    ranges: list[tuple[float, float] | None]
    """The smoothed stretch of a 16-bit/float image; None: the --thermal-norm rule on the
    frame alone (8-bit images, a time constant of 0, the fixed rule)."""
    frozen_since: list[int | None]
    """For a frame that repeats the one before it in stamp order, the (offset-corrected)
    stamp at which the repeated image first came; None for a new image."""


def thermal_timeline(bag: PairedBagReader, settings: BagSettings) -> ThermalTimeline:
    """Read ``bag``'s thermal images (after pass 1) for frozen frames and the smoothed
    stretch; skipped entirely when neither is asked for."""
    stretch = settings.thermal_norm == "percentile" and settings.thermal_time_constant > 0
    count = len(bag.thermal.stamps)
    timeline = ThermalTimeline([None] * count, [None] * count)
    if settings.freeze_action == "ignore" and not stretch:
        return timeline
    digests: list[bytes | None] = [None] * count
    frames: list[tuple[float, float] | None] = [None] * count
    stretched = [False] * count
    for image in bag.images(bag.thermal):
        try:
            _, pixels = image.decode(str(bag.path))
        except BagReadError:
            continue  # fusing this pair reports it (--skip-bad), as without this pass
        digests[image.index] = hashlib.blake2b(pixels.tobytes(), digest_size=16).digest()
        if stretch and pixels.dtype != np.uint8 and pixels.ndim == 2:
            stretched[image.index] = True
            frames[image.index] = frame_range(pixels, settings.thermal_percentiles)
    stamps = bag.thermal_stamps(settings.thermal_offset)
    previous: bytes | None = None
    since = 0
    for index in sorted(range(count), key=stamps.__getitem__):
        digest = digests[index]
        if digest is not None and digest == previous:
            timeline.frozen_since[index] = since
        else:
            previous, since = digest, stamps[index]
    if any(stretched):
        ranges = smoothed_ranges(
            [(stamp, frame) for stamp, frame in zip(stamps, frames, strict=True)],
            settings.thermal_time_constant,
        )
        timeline.ranges = [
            value if flag else None for value, flag in zip(ranges, stretched, strict=True)
        ]
    return timeline
