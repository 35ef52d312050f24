"""The part of a bag's fusion that needs the model: serialized pairs in, fused Images out.

gifnet-fuse-bag runs one ``PairFuser`` in its own process and gifnet-fuse-bags one in each Ray
worker, so both write the same bytes; ``PairJob`` and ``PairResult`` are plain data for that
reason. The steps are the node's, in the node's order: decode, thermal normalisation,
alignment onto the RGB grid, the engine, the output encoding.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gifnet_ros.fusion.align import thermal_for_fusion
from gifnet_ros.fusion.conversion import fused_pixels
from gifnet_ros.fusion.engine import FusionEngine
from gifnet_ros.fusion.errors import one_line
from gifnet_ros.models.weights import WeightsError
from gifnet_ros.offline.bag_io import ToolError, compressed_cdr, image_cdr
from gifnet_ros.offline.bag_reader import ImageMessage
from gifnet_ros.offline.bag_settings import BagSettings


@dataclass(frozen=True)
class PairJob:
    """One pair to fuse; plain data, so that it can travel to a Ray worker."""

    seq: int  # the pair's place in the bag's output order
    source: str  # the bag, for error messages
    thermal: ImageMessage
    rgb: ImageMessage
    thermal_range: tuple[float, float] | None = None
    """The stretch of a 16-bit/float thermal image, smoothed over the bag in stamp order
    (thermal.RangeFilter); None: the --thermal-norm rule on the frame alone."""


@dataclass(frozen=True)
class PairResult:
    """A fused pair: the serialized fused Image, or the one-line reason it could not be fused."""

    message: bytes | None
    error: str | None
    model_seconds: float = 0.0
    compressed: bytes | None = None  # the fused CompressedImage, with --fused-compressed
    frozen: bool = False  # skipped by --freeze-action: reported, not an error


class PairFuser:
    """Serialized thermal/RGB messages in, serialized fused Images out, as the node fuses them.

    Decoding, thermal normalisation, alignment, the engine and the output encoding: the part
    of a bag's fusion that needs the model. gifnet-fuse-bag runs one in its own process and
    gifnet-fuse-bags one in each Ray worker, so the two write the same bytes. The model is
    loaded once, here; a failure is a ToolError.
    """

    def __init__(self, settings: BagSettings) -> None:
        self.settings = settings
        self.alignment = settings.check()
        loading = time.monotonic()
        try:
            self.engine = FusionEngine(settings.engine)
        except (ValueError, WeightsError, OSError, RuntimeError) as exc:
            raise ToolError(f"cannot load the model: {one_line(exc)}") from None
        self.load_seconds = round(time.monotonic() - loading, 3)
        self.batch = settings.batch or self.engine.default_batch()

    def fuse(self, jobs: Sequence[PairJob]) -> list[PairResult]:
        """One result per job, in order. Consecutive pairs of one size go through the network
        together (``engine.fuse_luminance_batch``); a pair that cannot be decoded, aligned or
        fused gets its reason instead of pixels."""
        results: list[PairResult | None] = [None] * len(jobs)
        run: list[tuple[int, Any, np.ndarray, np.ndarray]] = []
        for position, job in enumerate(jobs):
            try:
                header, thermal, rgb = self._prepare(job)
            except ToolError as exc:
                self._fuse_run(jobs, run, results)
                run = []
                results[position] = PairResult(None, str(exc))
                continue
            if run and _shape(run[0][2], run[0][3]) != _shape(thermal, rgb):
                self._fuse_run(jobs, run, results)
                run = []
            run.append((position, header, thermal, rgb))
        self._fuse_run(jobs, run, results)
        return [result for result in results if result is not None]

    def _prepare(self, job: PairJob) -> tuple[Any, np.ndarray, np.ndarray]:
        """(RGB header, thermal on the RGB grid, RGB pixels) of a pair, or a ToolError."""
        settings = self.settings
        _, thermal = job.thermal.decode(job.source)
        rgb_msg, rgb = job.rgb.decode(job.source)
        rule, value_range = settings.thermal_norm, settings.thermal_range
        if job.thermal_range is not None:  # the range over time, as the node stretches
            rule, value_range = "fixed", job.thermal_range
        try:
            thermal = thermal_for_fusion(
                thermal,
                rgb.shape,
                self.alignment,
                rule,
                settings.thermal_percentiles,
                value_range,
            )
        except ValueError as exc:
            raise ToolError(f"{_pair_text(job)}: {one_line(exc)}") from None
        return rgb_msg.header, thermal, rgb

    def _fuse_run(
        self,
        jobs: Sequence[PairJob],
        run: list[tuple[int, Any, np.ndarray, np.ndarray]],
        results: list[PairResult | None],
    ) -> None:
        """Fuse pairs of one size in one network call; if that fails, each on its own, so the
        reason lands on the pair that caused it (a device out of memory included)."""
        if not run:
            return
        try:
            fused = self.engine.fuse_luminance_batch([(t, r) for _, _, t, r in run])
        except (ValueError, RuntimeError) as exc:  # sizes; a device out of memory
            if len(run) > 1:
                for item in run:
                    self._fuse_run(jobs, [item], results)
                return
            position = run[0][0]
            results[position] = PairResult(None, f"{_pair_text(jobs[position])}: {one_line(exc)}")
            return
        settings = self.settings
        encoding, compressed = settings.fused_encoding, settings.fused_compressed
        seconds = self.engine.last_model_seconds / len(run)
        for (position, header, _, _), (luminance, colour) in zip(run, fused, strict=True):
            pixels = fused_pixels(encoding, luminance, colour)
            message = bytes(image_cdr(header, pixels, encoding))
            packed = None
            if compressed:  # pixels are RGB (or grey) for every encoding
                packed = bytes(compressed_cdr(header, pixels, compressed, settings.jpeg_quality))
            results[position] = PairResult(message, None, seconds, packed)


def _shape(thermal: np.ndarray, rgb: np.ndarray) -> tuple[Any, ...]:
    """What pairs must share to be fused in one batch."""
    return thermal.shape, thermal.dtype, rgb.shape, rgb.dtype


def _pair_text(job: PairJob) -> str:
    return (
        f"{job.source}: {job.thermal.topic} message {job.thermal.index} with "
        f"{job.rgb.topic} message {job.rgb.index}"
    )
