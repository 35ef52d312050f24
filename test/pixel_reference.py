"""Pixel formats computed from their definitions (BT.601, 4:2:2 sample order, Bayer
mosaics, 16-to-8-bit scaling): the independent side of the conversion tests, shared by the
ROS-free decoder's tests and the node's encoding tests."""

from __future__ import annotations

import numpy as np


def sixteen_to_eight(values: np.ndarray) -> np.ndarray:
    """round(x * 255 / 65535) in integers: that is x / 257, which never ends in .5 since 257 is
    odd, so adding half the divisor and flooring rounds it."""
    return ((values.astype(np.int64) + 128) // 257).astype(np.uint8)


def bt601_studio_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 studio-swing YCbCr (Y 16..235, Cb/Cr 16..240 around 128) to 8-bit RGB.

    Y below 16 counts as 16 (OpenCV's decoder has no footroom), the rest is the standard's
    matrix: R = 1.164 (Y-16) + 1.596 Cr, G = 1.164 (Y-16) - 0.813 Cr - 0.391 Cb,
    B = 1.164 (Y-16) + 2.018 Cb.
    """
    luma = 1.164 * (np.maximum(y.astype(float), 16.0) - 16.0)
    cb, cr = u.astype(float) - 128.0, v.astype(float) - 128.0
    rgb = np.stack([luma + 1.596 * cr, luma - 0.813 * cr - 0.391 * cb, luma + 2.018 * cb], -1)
    return np.clip(np.rint(rgb), 0, 255)


def yuv422_samples(y: np.ndarray, u: np.ndarray, v: np.ndarray, order: str) -> np.ndarray:
    """The H x 2W bytes of a 4:2:2 image: per pixel pair, its four samples in ``order``."""
    by_name = {"Y0": y[:, 0::2], "Y1": y[:, 1::2], "U": u, "V": v}
    names = {"UYVY": ("U", "Y0", "V", "Y1"), "YUYV": ("Y0", "U", "Y1", "V")}[order]
    return np.stack([by_name[name] for name in names], axis=-1).reshape(y.shape[0], -1)


def bayer_mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Each pixel keeps the one colour its place in the 2x2 ``pattern`` names."""
    mosaic = np.zeros(rgb.shape[:2], rgb.dtype)
    for index, (row, col) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        channel = "RGB".index(pattern[index])
        mosaic[row::2, col::2] = rgb[row::2, col::2, channel]
    return mosaic


def bilinear_interior(mosaic: np.ndarray, pattern: str) -> np.ndarray:
    """Bilinear demosaic of the interior (one-pixel border cut), written from its definition:
    a pixel keeps its own colour and takes each other colour as the mean of the 3x3
    neighbours that carry it (4 for green at red/blue, 4 diagonal for red at blue and blue at
    red, 2 for red and blue at green), rounded half up."""
    height, width = mosaic.shape
    colour_at = np.empty((height, width), "U1")
    for index, (row, col) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        colour_at[row::2, col::2] = pattern[index]
    values = mosaic.astype(float)
    out = np.zeros((height - 2, width - 2, 3))
    for channel, letter in enumerate("RGB"):
        has = (colour_at == letter).astype(float)
        total = np.zeros((height - 2, width - 2))
        count = np.zeros((height - 2, width - 2))
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                if dr or dc:
                    window = np.s_[1 + dr : height - 1 + dr, 1 + dc : width - 1 + dc]
                    total += (values * has)[window]
                    count += has[window]
        own = has[1:-1, 1:-1] > 0
        mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        out[..., channel] = np.where(own, values[1:-1, 1:-1], np.floor(mean + 0.5))
    return out
