"""fused/camera_info over DDS: the RGB camera's CameraInfo with the fused image's header,
fitted to the fused image's size.

Each case publishes an RGB ``CameraInfo`` and a 64x48 pair, and compares the node's
``fused/camera_info`` with intrinsics worked out by hand for that case (pixel coordinates
scale with the image; a region of interest shifts the principal point; binning divides). The
node runs the classic_average backend: what is tested is the node's wiring, not the network.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from node_harness import FRAME, mono8_pair, running_node, stamp

from gifnet_ros.fusion.pairing import stamp_to_ns
from gifnet_ros.ros.camera_info import fused_camera_info

pytestmark = pytest.mark.dds

PARAMETERS = {"backend": "classic_average", "device": "cpu", "sync.backend": "builtin"}
K_VGA = [400.0, 0.0, 300.0, 0.0, 410.0, 200.0, 0.0, 0.0, 1.0]
P_VGA = [400.0, 0.0, 300.0, -40.0, 0.0, 410.0, 200.0, 0.0, 0.0, 0.0, 1.0, 0.0]
D = [-0.1, 0.01, 0.001, 0.002, 0.0]
R = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]


class InfoListener:
    """fused/camera_info messages received by the test's client, by stamp."""

    def __init__(self, client) -> None:
        from sensor_msgs.msg import CameraInfo

        self._cv = threading.Condition()
        self.received: dict[int, object] = {}
        self.publisher = client.node.create_publisher(CameraInfo, "rgb/camera_info", 10)
        client.node.create_subscription(CameraInfo, "fused/camera_info", self._on_info, 10)

    def _on_info(self, msg) -> None:
        with self._cv:
            self.received[stamp_to_ns(msg.header.stamp)] = msg
            self._cv.notify_all()

    def wait(self, stamp_ns: int, timeout: float):
        with self._cv:
            self._cv.wait_for(lambda: stamp_ns in self.received, timeout)
            return self.received.get(stamp_ns)


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(5)
    return rng.integers(0, 256, (48, 64), np.uint8), rng.integers(0, 256, (48, 64, 3), np.uint8)


@pytest.fixture(scope="module")
def node(tmp_path_factory, pair):
    with running_node(tmp_path_factory.mktemp("info"), "info", PARAMETERS, pair) as running:
        yield running


@pytest.fixture(scope="module")
def listener(node):
    return InfoListener(node.client)


def camera_info(width, height, k, p, *, binning=(0, 0), roi=(0, 0, 0, 0)):
    from sensor_msgs.msg import CameraInfo, RegionOfInterest

    x, y, w, h = roi
    info = CameraInfo(
        width=width,
        height=height,
        distortion_model="plumb_bob",
        d=D,
        k=k,
        r=R,
        p=p,
        binning_x=binning[0],
        binning_y=binning[1],
        roi=RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h),
    )
    info.header.frame_id = "calibration_frame"  # the fused info takes the image's frame
    return info


def test_no_rgb_camera_info_no_fused_camera_info(node, listener, pair):
    """Nothing on rgb/camera_info yet: the image is fused, no camera_info goes out with it."""
    fused = node.fuse(*mono8_pair(pair, stamp()))
    # Diagnostics may not have been discovered yet: wait for a status rather than read one.
    assert node.client.wait_diagnostics(lambda d: d.get("camera_info") == "none received", 10)
    assert listener.wait(stamp_to_ns(fused.header.stamp), 1.0) is None


CASES = {
    # RGB info at the image size: passed through unchanged.
    "same size": (
        camera_info(64, 48, [50.0, 0, 31.5, 0, 51.0, 23.5, 0, 0, 1], [50.0, 0, 31.5, -5.0,
                    0, 51.0, 23.5, 0, 0, 0, 1, 0]),
        dict(width=64, height=48, k=[50.0, 0, 31.5, 0, 51.0, 23.5, 0, 0, 1],
             p=[50.0, 0, 31.5, -5.0, 0, 51.0, 23.5, 0, 0, 0, 1, 0], binning=(0, 0)),
    ),
    # Calibrated at 128x96, images sent at 64x48: every pixel quantity halves.
    "half size": (
        camera_info(128, 96, [100.0, 0, 64, 0, 102.0, 48, 0, 0, 1],
                    [100.0, 0, 64, -10.0, 0, 102.0, 48, 0, 0, 0, 1, 0]),
        dict(width=64, height=48, k=[50.0, 0, 32, 0, 51.0, 24, 0, 0, 1],
             p=[50.0, 0, 32, -5.0, 0, 51.0, 24, 0, 0, 0, 1, 0], binning=(0, 0)),
    ),
    # 2x2 binning of a 128x96 sensor gives 64x48 images: what the info describes, unchanged.
    "binned": (
        camera_info(128, 96, [100.0, 0, 64, 0, 102.0, 48, 0, 0, 1],
                    [100.0, 0, 64, 0, 0, 102.0, 48, 0, 0, 0, 1, 0], binning=(2, 2)),
        dict(width=128, height=96, k=[100.0, 0, 64, 0, 102.0, 48, 0, 0, 1],
             p=[100.0, 0, 64, 0, 0, 102.0, 48, 0, 0, 0, 1, 0], binning=(2, 2)),
    ),
    # A 128x96 region at (20, 10) of a VGA sensor, sent at 64x48: shift by the region's
    # corner, then halve: cx = (300 - 20) / 2, cy = (200 - 10) / 2.
    "region, half size": (
        camera_info(640, 480, K_VGA, P_VGA, roi=(20, 10, 128, 96)),
        dict(width=64, height=48, k=[200.0, 0, 140, 0, 205.0, 95, 0, 0, 1],
             p=[200.0, 0, 140, -20.0, 0, 205.0, 95, 0, 0, 0, 1, 0], binning=(0, 0)),
    ),
    # A 256x192 region at (32, 16), 2x2 binned (128x96 images), sent at 64x48: a quarter of
    # full-sensor pixels: fx = 400 / 4, cx = (300 - 32) / 4, cy = (200 - 16) / 4.
    "region, binned, half size": (
        camera_info(640, 480, K_VGA, P_VGA, binning=(2, 2), roi=(32, 16, 256, 192)),
        dict(width=64, height=48, k=[100.0, 0, 67, 0, 102.5, 46, 0, 0, 1],
             p=[100.0, 0, 67, -10.0, 0, 102.5, 46, 0, 0, 0, 1, 0], binning=(0, 0)),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_fused_camera_info_is_the_rgb_one_fitted_and_restamped(node, listener, pair, case):
    info, expected = CASES[case]
    listener.publisher.publish(info)
    assert node.client.wait_diagnostics(
        lambda d: d.get("camera_info", "none received") != "none received", 10
    )
    # The info and the pair travel on different topics: a pair may still meet the previous
    # case's info. Send pairs until one comes with this case's K (never more than a few).
    for _ in range(5):
        now = stamp()
        thermal_msg, rgb_msg = mono8_pair(pair, now)
        rgb_msg.header.frame_id = f"{FRAME['rgb']}_{case.replace(' ', '_')}"
        fused = node.fuse(thermal_msg, rgb_msg)
        got = listener.wait(now, 10)
        assert got is not None, node.log()[-2000:]
        if np.allclose(got.k, expected["k"], rtol=0, atol=1e-9):
            break
    assert got.header.stamp == fused.header.stamp
    assert got.header.frame_id == fused.header.frame_id == rgb_msg.header.frame_id
    assert (got.width, got.height) == (expected["width"], expected["height"])
    np.testing.assert_allclose(got.k, expected["k"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.p, expected["p"], rtol=0, atol=1e-9)
    assert (got.binning_x, got.binning_y) == expected["binning"]
    kept_roi = expected["binning"] != (0, 0) or case == "same size"
    assert got.roi == (info.roi if kept_roi else type(info.roi)())
    assert got.distortion_model == "plumb_bob"
    np.testing.assert_array_equal(got.d, D)
    np.testing.assert_array_equal(got.r, R)


@settings(max_examples=200, deadline=None)
@given(
    roi=st.tuples(
        st.integers(0, 200), st.integers(0, 200), st.integers(8, 400), st.integers(8, 300)
    ),
    binning=st.tuples(st.integers(0, 4), st.integers(0, 4)),
    size=st.tuples(st.integers(8, 800), st.integers(8, 600)),
    point=st.tuples(st.floats(-2, 2), st.floats(-2, 2), st.floats(0.5, 20)),
)
def test_fitted_projections_land_where_the_sensor_pixel_goes(roi, binning, size, point):
    """Property, without DDS: a 3D point projected with the fitted K and P lands where the
    original K and P put it on the sensor, moved into the region, binned and scaled to the
    fused image, each step done here by hand: (sensor - offset) / binning * fused / described.
    """
    x0, y0, w, h = roi
    info = camera_info(640, 480, K_VGA, P_VGA, binning=binning, roi=roi)
    bx, by = max(binning[0], 1), max(binning[1], 1)
    described = (w // bx, h // by)
    if 0 in described:
        return  # binning coarser than the region: it describes no image
    fitted = fused_camera_info(info, info.header, *size)
    if described == size:  # what the RGB info describes: kept whole, ROI and binning too
        assert (fitted.width, fitted.height, fitted.roi) == (info.width, info.height, info.roi)
        assert (fitted.binning_x, fitted.binning_y) == binning
        assert list(fitted.k) == K_VGA and list(fitted.p) == P_VGA
        return

    def pixel(matrix, columns):
        u, v, depth = np.asarray(matrix, float).reshape(3, columns) @ [*point, 1.0][:columns]
        return u / depth, v / depth

    for fitted_matrix, sensor_matrix, columns in ((fitted.k, K_VGA, 3), (fitted.p, P_VGA, 4)):
        su, sv = pixel(sensor_matrix, columns)
        expected = (
            (su - x0) / bx * size[0] / described[0],
            (sv - y0) / by * size[1] / described[1],
        )
        np.testing.assert_allclose(pixel(fitted_matrix, columns), expected, rtol=1e-9, atol=1e-6)
    assert (fitted.width, fitted.height, fitted.binning_x, fitted.binning_y) == (*size, 0, 0)
    assert (fitted.roi.width, fitted.roi.height) == (0, 0)
