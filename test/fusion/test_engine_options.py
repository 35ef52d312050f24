"""FusionEngine speed options: reduced-resolution fusion (max_pixels, inference_scale,
restore), threads, option errors, and the CUDA path where a GPU exists. Small RoadScene
crops keep the network runs short."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from conftest import psnr

from gifnet_ros.fusion.engine import FusionEngine

pytestmark = pytest.mark.shared

CASE = "FLIR_00548"


@pytest.fixture(scope="module")
def pair(data_dir) -> tuple[np.ndarray, np.ndarray]:
    """A 128×160 RoadScene crop: thermal grey, visible RGB."""
    ir = cv2.imread(str(data_dir / f"roadscene/ir/{CASE}.jpg"), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(data_dir / f"roadscene/vis/{CASE}.jpg"), cv2.IMREAD_COLOR)
    crop = (slice(100, 228), slice(200, 360))
    return ir[crop], cv2.cvtColor(vis[crop], cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def full(weights_path, pair) -> np.ndarray:
    """The full-resolution fused luminance: what reduced-size fusion approximates."""
    return FusionEngine(weights_path, "cpu", mode="grey").fuse(*pair)


@pytest.mark.parametrize("options", [{"inference_scale": 1.0}, {"max_pixels": 128 * 160}])
def test_options_that_do_not_reduce_change_nothing(weights_path, pair, full, options):
    engine = FusionEngine(weights_path, "cpu", mode="grey", **options)
    assert np.array_equal(engine.fuse(*pair), full)


def test_reduced_size_keeps_the_full_size_and_detail_restoration_pays(weights_path, pair, full):
    """Half-size fusion comes back at full size; re-injecting the inputs' detail is closer to
    full-resolution fusion than upsampling alone (the reason the option exists)."""
    db = {}
    for restore in ("detail", "bilinear"):
        engine = FusionEngine(
            weights_path, "cpu", mode="grey", inference_scale=0.5, restore=restore
        )
        out = engine.fuse(*pair)
        assert out.shape == full.shape and out.dtype == np.uint8
        db[restore] = psnr(out, full)
    print(f"half size vs full: {db}")
    assert db["detail"] > db["bilinear"] + 0.5
    assert db["detail"] > 20.0


def test_max_pixels_bounds_the_network_size(weights_path, pair, full):
    """A pixel budget of a quarter of the image behaves like inference_scale 0.5."""
    by_budget = FusionEngine(weights_path, "cpu", mode="grey", max_pixels=64 * 80)
    by_scale = FusionEngine(weights_path, "cpu", mode="grey", inference_scale=0.5)
    assert np.array_equal(by_budget.fuse(*pair), by_scale.fuse(*pair))
    assert not np.array_equal(by_budget.fuse(*pair), full)


def test_reduced_size_keeps_colour(weights_path, pair):
    engine = FusionEngine(weights_path, "cpu", inference_scale=0.5)
    out = engine.fuse(*pair)
    assert out.shape == (*pair[0].shape, 3) and out.dtype == np.uint8


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backend": "tensorflow"}, "unknown backend 'tensorflow'"),
        ({"inference_scale": 0.0}, r"inference_scale must be in \(0, 1\]"),
        ({"inference_scale": 1.5}, r"inference_scale must be in \(0, 1\]"),
        ({"max_pixels": 10}, "max_pixels must be at least 64"),
        ({"restore": "sharpen"}, "unknown restore rule 'sharpen'"),
        ({"threads": 0}, "threads must be at least 1"),
    ],
)
def test_bad_options_are_errors(weights_path, options, message):
    with pytest.raises(ValueError, match=message) as err:
        FusionEngine(weights_path, "cpu", **options)
    assert "\n" not in str(err.value)


def test_a_bad_value_set_later_is_an_error_at_fusion(weights_path, pair):
    engine = FusionEngine(weights_path, "cpu")
    engine.inference_scale = 2.0
    with pytest.raises(ValueError, match="inference_scale"):
        engine.fuse(*pair)


def test_threads_sets_torch_threads(weights_path):
    before = torch.get_num_threads()
    try:
        FusionEngine(weights_path, "cpu", threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_fuses_like_the_cpu(weights_path, pair, precision):
    """Pinned uploads, on-device colour and the timed forward on a real GPU."""
    cpu = FusionEngine(weights_path, "cpu", "fp32").fuse(*pair)
    engine = FusionEngine(weights_path, "cuda", precision=precision)
    for _ in range(2):  # the second call reuses the pinned buffers
        out = engine.fuse(*pair)
        limit = 1 if precision == "fp32" else 8
        assert np.abs(out.astype(int) - cpu).max() <= limit
    assert engine.last_model_seconds > 0.0
