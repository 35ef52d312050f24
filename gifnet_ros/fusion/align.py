"""Bring a thermal image onto the RGB image's pixel grid before fusion, without ROS.

GIFNet fuses two images pixel by pixel, so both must have the same size and, ideally, show the
same scene point at the same pixel. Thermal and RGB cameras rarely agree on either, so the node
applies one of three rules (its ``align.*`` parameters):

- ``resize`` (default): scale the whole thermal image to the RGB size. Right for co-boresighted
  camera pairs (one housing, a beam splitter, or a dataset that is already registered, such as
  M3SVD), where only the resolution differs.
- ``homography``: warp with a 3x3 matrix (row-major) that maps thermal pixel coordinates to RGB
  pixel coordinates, e.g. from a calibration against a heated checkerboard. Pixels that fall
  outside the thermal image become 0 (cold).
- ``none``: the images must already have the same size; anything else is an error rather than
  a silent resize, because a user who chose ``none`` says the grids already match.

An optional crop ``[x, y, w, h]`` is cut from the thermal image first (``w = h = 0``: no crop),
for thermal cores whose field of view is wider than the RGB camera's; the homography, if any,
then works in the cropped image's coordinates.

This lives outside the node so it can be tested without ROS and reused by offline tools;
:func:`read_params_alignment` reads the ``align.*`` settings of a node parameter file (e.g.
gifnet-calibrate's output), so the offline tools take the very file the node is launched with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from gifnet_ros.fusion.thermal import normalize_thermal

METHODS = ("resize", "homography", "none")
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
NO_CROP = (0, 0, 0, 0)


class AlignmentError(ValueError):
    """A bad alignment setting or an image it cannot apply to; the message is one line."""


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


@dataclass(frozen=True)
class Alignment:
    """A validated alignment rule; build it with :meth:`create` so bad settings never exist."""

    method: str = "resize"
    homography: tuple[float, ...] = IDENTITY
    crop: tuple[int, int, int, int] = NO_CROP

    @classmethod
    def create(
        cls,
        method: str = "resize",
        homography: Sequence[float] = IDENTITY,
        crop: Sequence[int] = NO_CROP,
    ) -> Alignment:
        """Validate the three settings; raises :class:`AlignmentError` naming the bad one.

        The homography is checked even when the method is not ``homography``, so that switching
        the method later cannot activate a matrix that was never valid.
        """
        if method not in METHODS:
            raise AlignmentError(f"align.method {method!r} is not one of {', '.join(METHODS)}")
        values = tuple(float(v) for v in homography)
        if len(values) != 9:
            raise AlignmentError(
                f"align.homography needs 9 numbers (3x3, row-major), got {len(values)}"
            )
        if not all(math.isfinite(v) for v in values):
            raise AlignmentError("align.homography contains NaN or infinity")
        if abs(np.linalg.det(np.array(values).reshape(3, 3))) < 1e-12:
            raise AlignmentError("align.homography is singular (determinant 0)")
        box = tuple(int(v) for v in crop)
        if len(box) != 4:
            raise AlignmentError(f"align.crop needs 4 integers [x, y, w, h], got {len(box)}")
        x, y, w, h = box
        if min(box) < 0:
            raise AlignmentError(f"align.crop {list(box)} has a negative value")
        if (w == 0) != (h == 0):
            raise AlignmentError(
                f"align.crop {list(box)}: width and height must both be positive "
                "(or both 0 for no crop)"
            )
        return cls(method, values, (x, y, w, h))

    def apply(self, thermal: np.ndarray, rgb_shape: tuple[int, ...]) -> np.ndarray:
        """The thermal image on the RGB grid (``rgb_shape[:2]`` = height, width).

        Keeps the thermal dtype (uint8, uint16 or float32 all pass through OpenCV), so
        normalisation may happen before or after. Raises :class:`AlignmentError` when the crop
        does not fit or, for ``none``, when the sizes differ.
        """
        height, width = int(rgb_shape[0]), int(rgb_shape[1])
        x, y, w, h = self.crop
        if w:
            if x + w > thermal.shape[1] or y + h > thermal.shape[0]:
                raise AlignmentError(
                    f"align.crop {list(self.crop)} does not fit the {_size(thermal)} thermal image"
                )
            thermal = thermal[y : y + h, x : x + w]
        if self.method == "homography":
            matrix = np.array(self.homography, dtype=np.float64).reshape(3, 3)
            return cv2.warpPerspective(
                np.ascontiguousarray(thermal),
                matrix,
                (width, height),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0,
            )
        if thermal.shape[:2] == (height, width):
            return np.ascontiguousarray(thermal)
        if self.method == "none":
            raise AlignmentError(
                f"thermal image is {_size(thermal)} but the RGB image is {width}x{height} "
                "and align.method is none (use resize or homography)"
            )
        return cv2.resize(
            np.ascontiguousarray(thermal), (width, height), interpolation=cv2.INTER_LINEAR
        )


def thermal_for_fusion(
    thermal: np.ndarray,
    rgb_shape: tuple[int, ...],
    alignment: Alignment,
    rule: str,
    percentiles: tuple[float, float],
    value_range: tuple[float, float],
) -> np.ndarray:
    """A camera's thermal frame as the engine's first input: 8-bit and on the RGB grid.

    The node and the offline tool both fuse through this, so a bag fused offline
    gives the images the live node would have published. A 16-bit or float frame
    is normalised before alignment: a homography's zero border must not shift the
    percentiles. Raises ValueError (AlignmentError for the alignment) in one line.
    """
    if thermal.ndim == 2 and thermal.dtype != np.uint8:
        thermal = normalize_thermal(thermal, rule, percentiles, value_range)
    return alignment.apply(thermal, rgb_shape)


def read_params_file(path: Path) -> dict[str, Any]:
    """Every ``ros__parameters`` value of a ROS 2 parameter file, as dotted names (nested or
    dotted keys alike); the sections of all nodes (``/**``, ``fusion_node``, ...) are merged in
    file order, later ones winning. AlignmentError (one line) when it is no such YAML file."""
    try:
        document = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise AlignmentError(f"{path}: cannot read as YAML: {' '.join(str(exc).split())}") from None
    values: dict[str, Any] = {}

    def flatten(prefix: str, tree: dict[str, Any]) -> None:
        for key, value in tree.items():
            if isinstance(value, dict):
                flatten(f"{prefix}{key}.", value)
            else:
                values[f"{prefix}{key}"] = value

    for section in document.values() if isinstance(document, dict) else ():
        if isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict):
            flatten("", section["ros__parameters"])
    return values


def read_params_alignment(path: Path) -> Alignment:
    """The alignment a node parameter file sets: its ``align.method``, ``align.homography`` and
    ``align.crop``, the node's defaults for what it leaves out. AlignmentError naming the file."""
    values = read_params_file(path)
    try:
        return Alignment.create(
            values.get("align.method", Alignment.method),
            values.get("align.homography", IDENTITY),
            values.get("align.crop", NO_CROP),
        )
    except (AlignmentError, TypeError) as exc:
        raise AlignmentError(f"{path}: {exc}") from None
