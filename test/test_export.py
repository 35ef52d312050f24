"""ONNX export (gifnet-export) and the engine's onnxruntime backend, on ONNX Runtime's CPU
provider: against the authors' references, the torch network, and at sizes other than the
one traced. The export runs once for the module (it takes about a minute)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from conftest import REFERENCE

from gifnet_ros.engine import FusionEngine
from gifnet_ros.export import ExportError, OnnxGIFNet, default_onnx_path, export_onnx, main
from gifnet_ros.network import load_model

ort = pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs onnxruntime")
onnx = pytest.importorskip("onnx", reason="gifnet-export needs onnx")
pytest.importorskip("onnxscript", reason="gifnet-export needs onnxscript")


@pytest.fixture(scope="module")
def onnx_path(weights_path, tmp_path_factory):
    """An export written by the gifnet-export command itself."""
    path = tmp_path_factory.mktemp("onnx") / "gifnet.onnx"
    assert main(["--weights", str(weights_path), "-o", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def session(onnx_path):
    return OnnxGIFNet(onnx_path)


@pytest.fixture(scope="module")
def model(weights_path):
    return load_model(weights_path, "cpu")


def _reference_inputs(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    images = [cv2.imread(str(REFERENCE / f"{name}_{w}.png"), cv2.IMREAD_GRAYSCALE) for w in "ab"]
    return tuple(torch.from_numpy(i).float()[None, None] / 255.0 for i in images)


@pytest.mark.parametrize("name", ["Medical", "RS_FLIR_00548"])
def test_onnxruntime_matches_reference_and_torch(session, model, name):
    """Acceptance: within 1e-3 (0-255 scale) of the authors' output and of the torch network."""
    first, second = _reference_inputs(name)
    out = session(first, second)[0, 0].numpy() * 255.0
    with torch.inference_mode():
        torch_out = model(first, second)[0, 0].numpy() * 255.0
    expected = np.load(REFERENCE / f"{name}_y.npy")
    print(
        f"{name}: |ort - reference| {np.abs(out - expected).max():.2g}, "
        f"|ort - torch| {np.abs(out - torch_out).max():.2g}"
    )
    assert np.abs(out - expected).max() < 1e-3
    assert np.abs(out - torch_out).max() < 1e-3


def test_height_and_width_are_symbolic(onnx_path, session, model):
    """One graph serves sizes other than the traced one, odd and multiple-of-8 alike."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    for value in (*graph.input, *graph.output):
        dims = value.type.tensor_type.shape.dim
        assert dims[2].dim_param and dims[3].dim_param, f"{value.name} has a fixed size"
    rng = np.random.default_rng(5)
    for height, width in ((37, 53), (64, 40)):
        first, second = (
            torch.from_numpy(rng.random((1, 1, height, width), dtype=np.float32)) for _ in "ab"
        )
        with torch.inference_mode():
            expected = model(first, second)
        got = session(first, second)
        assert got.shape == (1, 1, height, width)
        assert float((got - expected).abs().max()) * 255.0 < 1e-3


def test_engine_backend_fuses_like_torch(onnx_path, weights_path, data_dir):
    ir = cv2.imread(str(data_dir / "roadscene/ir/FLIR_04302.jpg"), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(data_dir / "roadscene/vis/FLIR_04302.jpg"), cv2.IMREAD_COLOR)
    ir, vis = ir[40:136, 100:228], cv2.cvtColor(vis[40:136, 100:228], cv2.COLOR_BGR2RGB)
    engine = FusionEngine(weights_path, "cpu", backend="onnxruntime", onnx_model=onnx_path)
    reference = FusionEngine(weights_path, "cpu", "fp32")
    out, expected = engine.fuse(ir, vis), reference.fuse(ir, vis)
    assert out.shape == expected.shape == (96, 128, 3)
    assert np.abs(out.astype(int) - expected).max() <= 1  # rounding ties only
    assert engine.last_model_seconds > 0.0


def test_unavailable_provider_is_a_clear_error(onnx_path, weights_path):
    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has TensorRT")
    with pytest.raises(ValueError, match="TensorrtExecutionProvider is not available") as err:
        FusionEngine(
            weights_path, "cpu", backend="onnxruntime", onnx_model=onnx_path, providers=["tensorrt"]
        )
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"precision": "bf16"}, "'bf16' is not available with onnxruntime"),
        ({"precision": "fp16"}, "'fp16' needs a CUDA device"),
        ({"compile": True}, "compile applies to the torch backend only"),
        ({"onnx_model": "missing.onnx"}, "ONNX model missing.onnx not found"),
    ],
)
def test_backend_option_errors(onnx_path, weights_path, options, message):
    options = {"onnx_model": onnx_path, **options}
    with pytest.raises(ValueError, match=message):
        FusionEngine(weights_path, "cpu", backend="onnxruntime", **options)


def test_fp16_session_needs_the_tensorrt_provider(onnx_path):
    """fp16 reaches an ONNX Runtime session only through TensorRT's half kernels."""
    with pytest.raises(ExportError, match="needs the TensorRT provider"):
        OnnxGIFNet(onnx_path, ["cpu"], fp16=True)


def test_old_opset_is_refused(model, tmp_path):
    with pytest.raises(ExportError, match="opset 16 is too old"):
        export_onnx(model, tmp_path / "old.onnx", opset=16)
    assert not (tmp_path / "old.onnx").exists()


def test_default_path_is_in_the_cache_and_names_the_opset(weights_path, tmp_path, monkeypatch):
    monkeypatch.setenv("GIFNET_CACHE_DIR", str(tmp_path))
    path17, path18 = (default_onnx_path(weights_path, opset) for opset in (17, 18))
    assert path17.parent == path18.parent == tmp_path
    assert path17.name.endswith("-opset17.onnx") and path18.name.endswith("-opset18.onnx")
    assert path17.name.split("-")[1] != path18.name.split("-")[1]
