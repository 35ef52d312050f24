"""How a bag is fused: one typed value for gifnet-fuse-bag, gifnet-fuse-bags and their workers.

The tools build a ``BagSettings`` from their flags (gifnet_ros.tools.fuse_bag); which bag goes
where is not part of it, so gifnet-fuse-bags fuses every bag with its one value.
``report_json`` is what a report's ``"settings"`` and an output bag's ``gifnet_ros.settings``
metadata record: the options that decide the output's bytes, under the keys the reports have
always used, so a second run can tell whether a finished bag was made the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gifnet_ros.fusion.align import NO_CROP, Alignment
from gifnet_ros.fusion.errors import one_line
from gifnet_ros.fusion.options import EngineOptions
from gifnet_ros.fusion.thermal import DEFAULT_TIME_CONSTANT, normalize_thermal
from gifnet_ros.offline.bag_io import ToolError

FUSED_TOPIC = "/fused/image"
FUSED_ENCODINGS = ("rgb8", "bgr8", "mono8")
DEFAULT_SLOP = 0.05  # the node's sync.slop default
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class BagSettings:
    """Everything that decides how one bag is fused; the flags of the same names say what each
    means (``gifnet-fuse-bag --help``). Times are in seconds."""

    thermal_topic: str
    rgb_topic: str
    fused_topic: str = FUSED_TOPIC
    fused_encoding: str = "rgb8"
    slop: float = DEFAULT_SLOP
    storage: str = "mcap"
    copy_topics: str = "all"  # all, none, or a comma-separated list
    # The engine's own options, mode included; the thermal fields below are applied by the bag
    # tools before alignment, as the node does, so the engine's thermal rule stays unused.
    engine: EngineOptions = field(default_factory=EngineOptions)
    batch: int | None = None  # None: 8 on CUDA, 1 elsewhere
    align: str = "resize"
    homography: tuple[float, ...] = IDENTITY
    crop: tuple[int, ...] = NO_CROP
    thermal_norm: str = "percentile"
    thermal_percentiles: tuple[float, float] = (1.0, 99.0)
    thermal_range: tuple[float, float] = (0.0, 65535.0)
    thermal_time_constant: float = DEFAULT_TIME_CONSTANT
    thermal_offset: float = 0.0
    freeze_action: str = "skip"
    freeze_max_age: float = 3.0
    fused_compressed: str | None = None  # jpeg or png
    jpeg_quality: int = 95
    skip_bad: bool = False  # report an undecodable pair and go on, instead of stopping

    def check(self) -> Alignment:
        """The alignment asked for, after turning bad alignment, thermal or slop settings into
        a ToolError: checked before any bag is read or model loaded."""
        try:
            alignment = Alignment.create(self.align, self.homography, self.crop)
            normalize_thermal(
                np.zeros((2, 2), np.uint16),
                self.thermal_norm,
                self.thermal_percentiles,
                self.thermal_range,
            )
        except ValueError as exc:
            raise ToolError(one_line(exc)) from None
        if not self.slop >= 0:
            raise ToolError(f"--slop must be >= 0 seconds, got {self.slop}")
        if not (math.isfinite(self.thermal_offset) and abs(self.thermal_offset) <= 60.0):
            raise ToolError(
                f"--thermal-offset must be within +-60 seconds, got {self.thermal_offset}"
            )
        if not (math.isfinite(self.thermal_time_constant) and self.thermal_time_constant >= 0):
            raise ToolError(
                f"--thermal-time-constant must be >= 0 seconds, got {self.thermal_time_constant}"
            )
        if not self.freeze_max_age > 0:
            raise ToolError(f"--freeze-max-age must be > 0 seconds, got {self.freeze_max_age}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ToolError(f"--jpeg-quality must be 1..100, got {self.jpeg_quality}")
        return alignment

    def report_json(self) -> dict[str, Any]:
        """The settings as reports and bag metadata record them (the batch is added by the
        run, once the device has decided it)."""
        engine = self.engine
        return {
            "thermal_topic": self.thermal_topic,
            "rgb_topic": self.rgb_topic,
            "fused_topic": self.fused_topic,
            "fused_encoding": self.fused_encoding,
            "slop_s": self.slop,
            "storage": self.storage,
            "copy_topics": self.copy_topics,
            "mode": engine.mode,
            "backend": engine.backend,
            "network": engine.network,
            "weights": None if engine.weights is None else str(engine.weights),
            "device": engine.device,
            "precision": engine.precision,
            "max_pixels": engine.max_pixels,
            "inference_scale": engine.inference_scale,
            "restore": engine.restore,
            "align": self.align,
            "homography": list(self.homography),
            "crop": list(self.crop),
            "thermal_norm": self.thermal_norm,
            "thermal_percentiles": list(self.thermal_percentiles),
            "thermal_range": list(self.thermal_range),
            "thermal_time_constant_s": self.thermal_time_constant,
            "thermal_offset_s": self.thermal_offset,
            "freeze_action": self.freeze_action,
            "freeze_max_age_s": self.freeze_max_age,
            "fused_compressed": self.fused_compressed,
            "jpeg_quality": self.jpeg_quality,
        }
