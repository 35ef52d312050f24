"""The fused image's ``CameraInfo``: the RGB camera's calibration, restamped and fitted to size.

The fused image lies on the RGB camera's pixel grid (the thermal image is aligned to it), so
the RGB ``CameraInfo`` describes it; downstream nodes (rectification, projection, detectors
using intrinsics) get it on ``fused/camera_info`` with exactly the fused image's header.

When the fused image is not the size the RGB ``CameraInfo`` describes (its ``width`` x
``height``, or its ``roi`` divided by ``binning``, per the message's definition), region and
binning are folded into the intrinsics and ``K`` and ``P`` are scaled to the fused size:
a pixel ``u`` of the described image is ``(u_full - x_offset) / binning_x`` and a fused pixel
is that times ``fused_width / described_width``, the convention image_proc's resize node uses
(no half-pixel shift). The result has the fused size, no ROI and no binning.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sensor_msgs.msg import CameraInfo, RegionOfInterest


def described_size(info: CameraInfo) -> tuple[int, int]:
    """Width and height of the images ``info`` belongs to: ROI (or full) over binning."""
    width, height = info.width, info.height
    if info.roi.width > 0 and info.roi.height > 0:
        width, height = info.roi.width, info.roi.height
    return width // max(info.binning_x, 1), height // max(info.binning_y, 1)


def fused_camera_info(info: CameraInfo, header: Any, width: int, height: int) -> CameraInfo:
    """``info`` for a fused image of ``width`` x ``height`` pixels stamped with ``header``."""
    fitted = CameraInfo(
        header=header,
        width=info.width,
        height=info.height,
        distortion_model=info.distortion_model,
        d=info.d,
        k=info.k,
        r=info.r,
        p=info.p,
        binning_x=info.binning_x,
        binning_y=info.binning_y,
        roi=info.roi,
    )
    described = described_size(info)
    if described == (width, height) or 0 in described:
        return fitted  # the RGB size (or an uncalibrated camera: nothing to scale)
    roi = info.roi
    x0, y0 = (roi.x_offset, roi.y_offset) if roi.width > 0 and roi.height > 0 else (0, 0)
    sx = width / described[0] / max(info.binning_x, 1)
    sy = height / described[1] / max(info.binning_y, 1)
    # Full-sensor pixel -> fused pixel, as a 3x3 map applied to K and P's rows.
    to_fused = np.array([[sx, 0.0, -x0 * sx], [0.0, sy, -y0 * sy], [0.0, 0.0, 1.0]])
    fitted.k = (to_fused @ np.asarray(info.k, float).reshape(3, 3)).ravel()
    fitted.p = (to_fused @ np.asarray(info.p, float).reshape(3, 4)).ravel()
    fitted.width, fitted.height = width, height
    fitted.binning_x = fitted.binning_y = 0
    fitted.roi = RegionOfInterest()
    return fitted
