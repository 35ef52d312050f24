"""benchmarks/gpu_check.py on the CPU, run as a user runs it: a subprocess on a prepared
assets folder. Its CUDA rows cannot run here and must say so; its CPU rows hold the real
thresholds (fp32 within 1e-3 of the authors' output, lower precisions at least 45 dB)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import REFERENCE, ROOT, SHARED, WEIGHTS

from gifnet_ros.models.gifnet import load_model

pytestmark = pytest.mark.shared

SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
CASES = ("Medical", "RS_FLIR_04302")
SIZES = ("64x48", "40x32")
BATCHES = (1, 2)
DEFAULT_VARIANTS = (
    "torch-fp32",
    "torch-auto",
    "torch-fp16",
    "torch-bf16",
    "ort-cuda-fp32",
    "torch-auto-compile",
    "ort-tensorrt-fp16",
)
CUDA_ONLY = ("torch-fp16", "ort-cuda-fp32", "torch-auto-compile", "ort-tensorrt-fp16")
FP32_LIMIT = 1e-3  # 0-255 scale, the acceptance threshold of test_network.py
MIN_DB = 45.0


def run_check(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *(str(a) for a in args)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory, weights_path: Path) -> Path:
    """An assets folder filled by --prepare from ../shared, as for a GPU machine."""
    folder = tmp_path_factory.mktemp("gpu_assets")
    done = run_check("--prepare", folder, "--shared", SHARED, "--no-onnx")
    assert done.returncode == 0, done.stderr
    return folder


@pytest.fixture(scope="module")
def cpu_run(assets: Path, tmp_path_factory: pytest.TempPathFactory):
    """The check on the CPU with small sizes; (completed process, the JSON report)."""
    out = tmp_path_factory.mktemp("gpu_check") / "check.json"
    done = run_check(
        "--assets", assets, "--device", "cpu", "--sizes", *SIZES, "--batch", *BATCHES,
        "--runs", 1, "--cases", *CASES, "--threads", 1, "--budget", 10_000, "--json", out,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done, json.loads(out.read_text())


def _variant(report: dict, name: str) -> dict:
    (found,) = [v for v in report["variants"] if v["variant"] == name]
    return found


def test_prepare_copies_weights_and_references(assets):
    assert (assets / "weights" / "Final.model").read_bytes() == WEIGHTS.read_bytes()
    for case in CASES:
        for suffix in ("_a.png", "_b.png", "_y.npy"):
            name = f"{case}{suffix}"
            assert (assets / "reference" / name).read_bytes() == (REFERENCE / name).read_bytes()
    assert not (assets / "gifnet.onnx").exists()  # --no-onnx


def test_every_row_is_reported(cpu_run):
    done, report = cpu_run
    keys = [(r["variant"], r["size"], r["batch"]) for r in report["rows"]]
    expected = [(v, s, b) for v in DEFAULT_VARIANTS for s in SIZES for b in BATCHES]
    assert sorted(keys) == sorted(expected)
    assert {r["status"] for r in report["rows"]} <= {"ok", "unavailable"}
    assert report["problems"] == []
    assert "0 problem(s)" in done.stdout
    assert report["settings"]["cases"] == list(CASES)


def test_fp32_reference_check_holds_the_real_threshold(cpu_run):
    _, report = cpu_run
    fp32 = _variant(report, "torch-fp32")
    assert fp32["status"] == "ok" and fp32["precision"] == "fp32"
    checks = fp32["reference"]["cases"]
    assert [c["case"] for c in checks] == list(CASES)
    assert fp32["reference"]["pass"]
    assert all(c["max_abs_diff"] <= FP32_LIMIT for c in checks)


def test_reported_difference_is_the_networks(cpu_run, weights_path):
    """The difference the check reports for a case is the one computed here, independently,
    with the network alone (a comparison that always said 0 would fail this)."""
    _, report = cpu_run
    (medical,) = [
        c for c in _variant(report, "torch-fp32")["reference"]["cases"] if c["case"] == "Medical"
    ]
    first, second = (
        torch.from_numpy(
            cv2.imread(str(REFERENCE / f"Medical_{w}.png"), cv2.IMREAD_GRAYSCALE)
        ).float()[None, None]
        / 255.0
        for w in ("a", "b")
    )
    with torch.inference_mode():
        ours = load_model(weights_path, "cpu")(first, second)[0, 0].numpy() * 255.0
    diff = float(np.abs(ours - np.load(REFERENCE / "Medical_y.npy")).max())
    assert diff > 0  # the network is not bit-equal to the authors', so 0 would be a bug
    assert medical["max_abs_diff"] == pytest.approx(diff, abs=1e-4)


def test_lower_precisions_hold_45_db(cpu_run):
    _, report = cpu_run
    for name in ("torch-auto", "torch-bf16"):
        variant = _variant(report, name)
        assert variant["status"] == "ok"
        for check in variant["reference"]["cases"]:
            if variant["precision"] == "fp32":  # auto on a CPU without native bf16
                assert check["max_abs_diff"] <= FP32_LIMIT
            else:
                assert check["psnr_db"] >= MIN_DB and check["max_abs_diff"] > 0
    assert _variant(report, "torch-auto")["precision_reason"].startswith("auto")


def test_cuda_rows_say_why_they_did_not_run(cpu_run):
    done, report = cpu_run
    for name in CUDA_ONLY:
        variant = _variant(report, name)
        assert variant["status"] == "unavailable" and "CUDA device" in variant["reason"]
        rows = [r for r in report["rows"] if r["variant"] == name]
        assert rows and all(r["status"] == "unavailable" for r in rows)
        assert all("needs a CUDA device" in r["reason"] for r in rows)
        assert f"| {name} | – | 64x48 | 1 | – |" in done.stdout
    assert "no CUDA figures in this run" in done.stdout


def test_timed_rows_and_batches(cpu_run):
    """Each CPU row has consistent figures; a batch gives each sample's single-pair output
    (network, and fuse_batch against fuse: equal images in fp32 on a CPU, as the engine
    promises) and every precision stays near torch fp32 at the timed size."""
    done, report = cpu_run
    ok = [r for r in report["rows"] if r["status"] == "ok"]
    assert {r["variant"] for r in ok} == {"torch-fp32", "torch-auto", "torch-bf16"}
    for row in ok:
        assert row["s_per_pair"] > 0 and row["first_call_s"] > 0 and row["e2e_s_per_pair"] > 0
        assert row["pairs_per_s"] * row["s_per_pair"] == pytest.approx(1.0)
        assert row["peak_gpu_mib"] is None  # no GPU memory on a CPU
        network, images = row["batch_equals_single"], row["fuse_batch_equals_fuse"]
        if row["batch"] == 1:
            assert network is None and images is None
        elif row["precision"] == "fp32":
            assert network["max_abs_diff"] <= FP32_LIMIT and images["max_abs_diff"] == 0
        else:
            assert network["psnr_db"] is None or network["psnr_db"] >= MIN_DB
            assert images["psnr_db"] is None or images["psnr_db"] >= MIN_DB
        against = row["vs_torch_fp32"]
        if row["variant"] == "torch-fp32":
            assert against is None
        elif row["precision"] != "fp32":
            assert MIN_DB <= against["psnr_db"] < 200  # near fp32, not equal to it
        line = f"| {row['variant']} | {row['precision']} | {row['size']} | {row['batch']} | "
        assert line in done.stdout


def test_zero_budget_skips_every_row_and_says_so(assets, tmp_path):
    out = tmp_path / "check.json"
    done = run_check(
        "--assets", assets, "--device", "cpu", "--sizes", "64x48", "--batch", 1,
        "--budget", 0, "--json", out,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["rows"]
    for row in rows:
        if row["variant"] in CUDA_ONLY:
            assert row["status"] == "unavailable"
        else:
            assert row["status"] == "skipped" and "budget" in row["reason"]
    assert "skipped: time budget of 0 s spent (--budget)" in done.stdout


def test_assets_without_weights_is_a_one_line_error(tmp_path):
    out = tmp_path / "check.json"
    done = run_check("--assets", tmp_path / "empty", "--device", "cpu", "--json", out)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "weights/Final.model" in done.stderr
    assert "--prepare" in done.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--sizes", "64by48"], "WIDTHxHEIGHT"), (["--sizes", "6x48"], "at least 8x8"),
     (["--batch", "0"], "at least 1"), (["--runs", "0"], "at least 1")],
)  # fmt: skip
def test_bad_arguments_are_refused(args, message, capsys, monkeypatch):
    """Argument checks, in this process (the script as a module) to spare a torch import."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import gpu_check

    with pytest.raises(SystemExit) as exit_:
        gpu_check.parse_args(args)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_gpu_lines_and_cells_format_with_a_fake_gpu(monkeypatch):
    """The header and table code that only a GPU reaches, fed a FAKE GPU's description
    (no GPU exists here), so that the day a GPU is at hand does not end in a KeyError."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import gpu_check

    info = gpu_check.machine_info(torch.device("cpu"))
    info["gpu"] = {"name": "FAKE GPU", "capability": "9.0", "memory_gib": 80.0, "driver": "1.2"}
    info["tf32"] = {"cudnn_conv": True, "matmul": False}
    gpu_line = gpu_check.machine_lines(info)[-1]
    assert gpu_line == (
        "GPU: FAKE GPU (compute 9.0, 80.0 GiB), driver 1.2; "
        "TF32 in cuDNN convolutions on, in matmul off"
    )
    check = gpu_check.compare(np.zeros((4, 4)), np.full((4, 4), 0.5), "fp16")
    row = {
        "variant": "ort-cuda-fp32", "precision": "fp16", "size": "64x48", "batch": 2,
        "status": "ok", "s_per_pair": 0.5, "pairs_per_s": 2.0, "first_call_s": 9.0,
        "e2e_s_per_pair": 0.6, "peak_gpu_mib": 1234.5, "memory_method": gpu_check.ORT_MEMORY,
        "batch_equals_single": check, "fuse_batch_equals_fuse": None, "vs_torch_fp32": check,
    }  # fmt: skip
    cells = gpu_check.speed_table([row])[-1].split(" | ")
    assert cells[8] == "1234.5"
    assert cells[9] == cells[11] == "pass (54.2 dB ≥ 45)"  # 10·log10(255² / 0.25)
    assert cells[-1] == "memory: mem_get_info (ONNX Runtime) |"


def test_the_engine_needs_only_torch_numpy_and_opencv():
    """A lent GPU machine has its own Python with PyTorch, numpy and OpenCV only: the engine
    and both networks import there (the other packages blocked in a child interpreter)."""
    blocked = ("tqdm", "rosbags", "yaml", "onnx", "onnxruntime", "rclpy", "ray", "matplotlib")
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "from gifnet_ros.fusion.engine import FusionEngine\n"
        "from gifnet_ros.models.tim import load_tim\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
