"""ONNX export (gifnet-export) and the engine's onnxruntime backend, on ONNX Runtime's CPU
provider: against the authors' references, the torch network, and at sizes other than the
one traced; for GIFNet and for TIM (both variants, the project's weights). Each export runs
once for the module (GIFNet's takes about a minute, TIM's seconds)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import REFERENCE, SHARED

from gifnet_ros.fusion.engine import FusionEngine
from gifnet_ros.models.gifnet import load_model
from gifnet_ros.models.onnx import (
    MULTIPLE_KEY,
    NETWORK_KEY,
    ExportError,
    OnnxGIFNet,
    default_onnx_path,
    export_onnx,
)
from gifnet_ros.models.tim import NETWORK_VARIANTS, load_tim
from gifnet_ros.models.weights import WeightsError
from gifnet_ros.tools.export import main

pytestmark = pytest.mark.shared

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


def test_auto_backend_runs_tim_in_onnxruntime_where_the_cpu_lacks_bf16(tmp_path, monkeypatch):
    """backend auto with oneDNN capped to AVX2 (what a CPU without native bf16 offers): TIM
    runs its exported graph in fp32, says why, and fuses like torch fp32; GIFNet stays in
    PyTorch there (its faster fp32 path)."""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("GIFNET_CACHE_DIR", str(tmp_path))  # the export goes to a fresh cache
    engine = FusionEngine(network="tim_light", device="cpu")
    assert (engine.backend, engine.precision) == ("onnxruntime", "fp32")
    assert engine.backend_reason == "auto: TIM's fp32 runs as fast in ONNX Runtime, in less memory"
    assert engine.backend_reason in engine.describe()
    rng = np.random.default_rng(3)
    ir = rng.integers(0, 256, (64, 80), dtype=np.uint8)
    vis = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    expected = FusionEngine(network="tim_light", device="cpu", precision="fp32").fuse(ir, vis)
    assert np.abs(engine.fuse(ir, vis).astype(int) - expected).max() <= 1  # rounding ties


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


# --- TIM ----------------------------------------------------------------------------------------

TIM_NETWORKS = tuple(NETWORK_VARIANTS)
# ONNX Runtime against torch, both fp32, on the 0-255 scale: GIFNet's acceptance bound. The
# graph holds the same operations in the same order, so the two differ by float rounding
# only (measured 0.7-0.9e-4 at 37×45 and 61×75); a padding or input-order mistake moves
# pixels by whole grey levels.
TIM_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def tim_exports(tmp_path_factory) -> dict[str, Path]:
    """One export per TIM network with the project's weights, written by the gifnet-export
    command itself with --check (ONNX Runtime against torch within 1e-3, else exit 1)."""
    folder = tmp_path_factory.mktemp("tim_onnx")
    paths = {}
    for network in TIM_NETWORKS:
        paths[network] = folder / f"{network}.onnx"
        assert main(["--network", network, "-o", str(paths[network]), "--check"]) == 0
    return paths


def _random_pair(height: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    return tuple(
        torch.from_numpy(rng.random((1, 1, height, width), dtype=np.float32)) for _ in "ab"
    )


@pytest.mark.parametrize("network", TIM_NETWORKS)
def test_tim_export_matches_torch_at_odd_sizes(tim_exports, network):
    """Sizes that are not multiples of 4 (so the ivif session pads and crops) or of 8."""
    path = tim_exports[network]
    model_proto = onnx.load(str(path), load_external_data=False)
    metadata = {entry.key: entry.value for entry in model_proto.metadata_props}
    multiple = 4 if network == "tim" else 1
    assert metadata == {NETWORK_KEY: network, MULTIPLE_KEY: str(multiple)}
    for value in (*model_proto.graph.input, *model_proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        assert dims[2].dim_param and dims[3].dim_param, f"{value.name} has a fixed size"
    session = OnnxGIFNet(path)
    assert (session.network, session.size_multiple) == (network, multiple)
    model = load_tim(NETWORK_VARIANTS[network])
    for seed, (height, width) in enumerate(((37, 45), (61, 75))):
        ir, vis = _random_pair(height, width, seed)
        with torch.inference_mode():
            expected = model(ir, vis)
        got = session(ir, vis)
        assert got.shape == (1, 1, height, width)
        error = float((got - expected).abs().max()) * 255.0
        print(f"{network} {width}x{height}: max |ort - torch| {error:.2g} (0-255)")
        assert error < TIM_TOLERANCE


@pytest.mark.parametrize("network", TIM_NETWORKS)
def test_tim_session_batch_equals_each_sample(tim_exports, network):
    session = OnnxGIFNet(tim_exports[network])
    pairs = [_random_pair(37, 45, seed) for seed in range(3)]
    alone = [session(ir, vis) for ir, vis in pairs]
    batch = session(torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs]))
    assert batch.shape == (3, 1, 37, 45)
    torch.testing.assert_close(batch, torch.cat(alone), rtol=0, atol=1e-6)
    assert (alone[0] - alone[1]).abs().max() > 1e-3  # the samples differ: the check could fail


def test_engine_onnxruntime_fuses_tim_like_torch(tim_exports, data_dir):
    """A real RoadScene pair, cropped to an odd size; the engine's colour path around both."""
    ir = cv2.imread(str(data_dir / "roadscene/ir/FLIR_04302.jpg"), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(data_dir / "roadscene/vis/FLIR_04302.jpg"), cv2.IMREAD_COLOR)
    ir, vis = ir[40:101, 100:175], cv2.cvtColor(vis[40:101, 100:175], cv2.COLOR_BGR2RGB)
    engine = FusionEngine(
        device="cpu", backend="onnxruntime", network="tim", onnx_model=tim_exports["tim"]
    )
    assert engine.precision == "fp32"  # auto on ONNX Runtime's CPU provider
    reference = FusionEngine(device="cpu", precision="fp32", network="tim")
    out, expected = engine.fuse(ir, vis), reference.fuse(ir, vis)
    assert out.shape == expected.shape == (61, 75, 3)
    assert np.abs(out.astype(int) - expected).max() <= 1  # rounding ties only
    assert engine.describe().startswith("tim, onnxruntime on cpu, fp32")


def test_engine_exports_tim_into_the_cache_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setenv("GIFNET_CACHE_DIR", str(tmp_path))
    engine = FusionEngine(device="cpu", backend="onnxruntime", network="tim_light")
    (written,) = tmp_path.glob("*.onnx")
    assert written == default_onnx_path(network="tim_light")
    assert written.name.startswith("tim_light-")
    ir, vis = _random_pair(24, 40, 3)
    with torch.inference_mode():
        expected = load_tim("light")(ir, vis).clamp(0, 1)
    assert float((engine.run_model(ir, vis) - expected).abs().max()) * 255.0 < TIM_TOLERANCE


def test_tim_default_paths_name_network_and_weights(weights_path, tmp_path, monkeypatch):
    """A TIM export never collides with GIFNet's, the other variant's or other weights'."""
    monkeypatch.setenv("GIFNET_CACHE_DIR", str(tmp_path))
    reference = SHARED / "tim" / "reference"
    if not reference.is_dir():
        pytest.skip(f"TIM reference cases not found at {reference}")
    pair = [reference / "ivif_model_1.pt", reference / "ivif_model_2.pt"]
    paths = {
        "gifnet": default_onnx_path(weights_path),
        "tim": default_onnx_path(network="tim"),
        "tim_light": default_onnx_path(network="tim_light"),
        "tim pair": default_onnx_path(f"{pair[0]},{pair[1]}", network="tim"),
    }
    assert len(set(paths.values())) == 4
    assert all(path.name.startswith(key.split()[0] + "-") for key, path in paths.items())
    assert default_onnx_path(pair, network="tim") == paths["tim pair"]  # one file, two spellings
    with pytest.raises(WeightsError, match=r"cannot read TIM weights file .*missing\.pt"):
        default_onnx_path(tmp_path / "missing.pt", network="tim_light")


def test_onnx_model_of_another_network_is_refused(tim_exports):
    with pytest.raises(ValueError, match="is an export of tim_light, not of network 'tim'"):
        FusionEngine(
            device="cpu", backend="onnxruntime", network="tim", onnx_model=tim_exports["tim_light"]
        )


def test_gifnet_export_takes_the_authors_tim_pair(tmp_path, capsys):
    """The authors' format, as one comma-separated --weights value, exported and checked
    (their seeded random weights: the case that needs --check's TIM bound, see export.py)."""
    reference = SHARED / "tim" / "reference"
    if not reference.is_dir():
        pytest.skip(f"TIM reference cases not found at {reference}")
    pair = f"{reference / 'ivif_model_1.pt'},{reference / 'ivif_model_2.pt'}"
    path = tmp_path / "tim_authors.onnx"
    assert main(["--network", "tim", "--weights", pair, "-o", str(path), "--check"]) == 0
    assert path.is_file() and not list(tmp_path.glob("*.part"))
    assert "max |onnxruntime - torch|" in capsys.readouterr().out
    missing = tmp_path / "missing.onnx"
    assert main(["--network", "tim", "--weights", str(reference), "-o", str(missing)]) == 1
    assert "gifnet-export: " in capsys.readouterr().err and not missing.exists()
