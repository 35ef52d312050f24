"""Camera encodings through the live node over DDS: YUV 4:2:2 and raw Bayer on both inputs.

A USB camera's ``yuv422`` (UYVY), a thermal core's ``yuv422_yuy2`` (YUYV, grey in Y, as UVC
thermal cameras send it) and a machine-vision camera's big-endian, row-padded
``bayer_grbg16`` are published to a real node. Each fused image must equal the
``classic_average`` fusion of the same pictures decoded independently, with test_conversion's
numpy BT.601 formula and bilinear demosaic, so the node is checked end to end without weights.
"""

from __future__ import annotations

import numpy as np
import pytest
from node_harness import FRAME, clip_pairs, pixels_of, raw_image, running_node, stamp
from pixel_reference import (
    bayer_mosaic,
    bilinear_interior,
    bt601_studio_rgb,
    sixteen_to_eight,
    yuv422_samples,
)

from gifnet_ros.fusion.engine import FusionEngine

pytestmark = [pytest.mark.dds, pytest.mark.shared]


@pytest.fixture(scope="module")
def pairs(data_dir):
    return clip_pairs(data_dir, 2)


@pytest.fixture(scope="module")
def rule() -> FusionEngine:
    """The node's backend, run here on the independently decoded inputs."""
    return FusionEngine(backend="classic_average", device="cpu")


@pytest.fixture(scope="module")
def node(tmp_path_factory, pairs):
    parameters = {"device": "cpu", "backend": "classic_average", "diagnostics_period": 0.3}
    with running_node(tmp_path_factory.mktemp("encodings"), "encodings", parameters, pairs[0]) as n:
        yield n


def studio_ycbcr(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BT.601 studio-swing Y (per pixel) and Cb, Cr (averaged over each pixel pair), uint8,
    from the standard's forward matrix on R'G'B' in 0..1."""
    r, g, b = (rgb[..., k].astype(float) / 255.0 for k in range(3))
    y = 16.0 + 65.481 * r + 128.553 * g + 24.966 * b
    cb = 128.0 - 37.797 * r - 74.203 * g + 112.0 * b
    cr = 128.0 + 112.0 * r - 93.786 * g - 18.214 * b
    cb, cr = ((c[:, 0::2] + c[:, 1::2]) / 2.0 for c in (cb, cr))
    return tuple(np.rint(c).astype(np.uint8) for c in (y, cb, cr))


def test_uyvy_rgb_fuses_as_its_bt601_decoding(node, pairs, rule):
    thermal, rgb = pairs[1]
    height, width = rgb.shape[:2]
    y, u, v = studio_ycbcr(rgb)
    samples = yuv422_samples(y, u, v, "UYVY").reshape(height, width, 2)
    decoded = bt601_studio_rgb(y, np.repeat(u, 2, axis=1), np.repeat(v, 2, axis=1))
    now = stamp()
    fused = node.fuse(
        raw_image(thermal, "mono8", now, FRAME["thermal"]),
        raw_image(samples, "yuv422", now, FRAME["rgb"], pad=4),
    )
    assert fused.header.frame_id == FRAME["rgb"]
    expected = rule.fuse(thermal, decoded.astype(np.uint8))
    # OpenCV's fixed-point decoder rounds a few values one level the other way.
    assert np.abs(pixels_of(fused).astype(int) - expected).max() <= 1


def test_yuyv_thermal_and_bayer16_rgb_fuse_as_decoded_by_hand(node, pairs, rule):
    thermal, rgb = pairs[1]
    height, width = thermal.shape
    # A grey thermal picture in studio-swing luma with neutral chroma.
    luma = np.rint(16.0 + thermal * (219.0 / 255.0)).astype(np.uint8)
    neutral = np.full((height, width // 2), 128, np.uint8)
    thermal_samples = yuv422_samples(luma, neutral, neutral, "YUYV").reshape(height, width, 2)
    everywhere = np.full_like(luma, 128)  # each pair's chroma, on both of its pixels
    thermal_decoded = bt601_studio_rgb(luma, everywhere, everywhere)[..., 0].astype(np.uint8)
    mosaic = bayer_mosaic(rgb.astype(np.uint16) * 257, "GRBG")
    rgb_decoded = rgb.copy()  # the one-pixel border is OpenCV's own and is not compared
    rgb_decoded[1:-1, 1:-1] = sixteen_to_eight(bilinear_interior(mosaic, "GRBG"))
    now = stamp()
    fused = node.fuse(
        raw_image(thermal_samples, "yuv422_yuy2", now, FRAME["thermal"]),
        raw_image(mosaic, "bayer_grbg16", now, FRAME["rgb"], big_endian=True, pad=3),
    )
    expected = rule.fuse(thermal_decoded, rgb_decoded)
    interior = np.s_[1:-1, 1:-1]
    assert np.abs(pixels_of(fused)[interior].astype(int) - expected[interior]).max() <= 1
