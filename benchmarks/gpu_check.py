"""The GPU check: reference equivalence and speed of every GPU path, in one command.

Written for the day a machine with an NVIDIA GPU is at hand: it needs only PyTorch, numpy
and OpenCV next to this checkout (no ROS, no package index), and stays within a time budget
(--budget, 270 s by default) so that it finishes in under five minutes on one modern GPU.
The weights and reference cases travel in a folder, laid out as ../shared/gifnet/
(weights/Final.model, reference/<case>_{a,b}.png and <case>_y.npy), plus gifnet.onnx for the
ONNX Runtime rows when the GPU machine cannot export one itself:

    python benchmarks/gpu_check.py --prepare .gpu_assets        # here, from ../shared
    python benchmarks/gpu_check.py --assets .gpu_assets --json gpu_check.json   # on the GPU
    python benchmarks/gpu_check.py --assets ../shared/gifnet --device cpu \\
        --sizes 64x48 --batch 1 2 --runs 1                      # the logic, on a CPU

It prints the machine (device, driver, CUDA, cuDNN, PyTorch, TF32 settings), then:

- reference equivalence of each eager torch precision on the authors' reference cases:
  fp32 within 1e-3 (0-255 scale) of the authors' float output, fp16/bf16/auto at least
  45 dB PSNR;
- a table of s/pair and pairs/s of the network (``FusionEngine.run_model`` on N×1×H×W
  inputs already on the device; warm-up call, then --runs timed calls, each followed by a
  device synchronisation; the median) per variant, size and batch, with the first call's
  time (compilation, cuDNN autotuning, TensorRT engine builds), s/pair end to end
  (``fuse_batch`` on uint8 thermal and RGB images: upload, colour, download), peak GPU
  memory, whether a batch gives each sample's single-pair output (network, and fuse_batch
  against fuse), and the network output's distance from torch fp32 at the same size (the
  same thresholds).

A variant that cannot run here (no CUDA device, no onnxruntime-gpu, no ONNX file) is listed
with the reason on each of its rows; a row the budget cannot fit is listed as skipped.
Exit status: 0 when every check that ran passed, 1 when one failed, 2 for bad arguments or
assets.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib.util
import json
import math
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the package from this checkout, installed or not

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import gifnet_ros  # noqa: E402 (main finds the package's own files by it)
from gifnet_ros.tools.arg_types import fusion_width_height  # noqa: E402 (argparse and re only)

FP32_MAX_DIFF = 1e-3  # 0-255 scale, as test/models/test_network.py holds the CPU network
MIN_PSNR_DB = 45.0
DEFAULT_ASSETS = ROOT / ".gpu_assets"
ONNX_NAME = "gifnet.onnx"
# How the ONNX Runtime rows measure GPU memory: its allocations are outside torch's allocator.
ORT_MEMORY = (
    "torch.cuda.mem_get_info: device memory held since the session was built (ONNX Runtime "
    "allocates outside torch; its arena keeps what the largest size needed)"
)
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")


@dataclass(frozen=True)
class Variant:
    """One engine configuration the check builds and times."""

    name: str
    backend: str
    precision: str
    providers: tuple[str, ...] = ()
    compile: bool = False
    cuda_only: bool = False
    describe: str = ""
    # Seconds assumed for the first call of the first row, for the budget guard only: a
    # compiler or TensorRT engine build takes minutes on some machines, and an overrun would
    # break the five-minute promise. Replaced by the measured first call after one row.
    first_call_guess_s: float | None = None


VARIANTS = (
    Variant("torch-fp32", "torch", "fp32", describe="eager, the exact mode"),
    Variant("torch-auto", "torch", "auto", describe="eager, the engine's default choice"),
    Variant("torch-fp16", "torch", "fp16", cuda_only=True, describe="eager, float16 autocast"),
    Variant("torch-bf16", "torch", "bf16", describe="eager, bfloat16 autocast"),
    Variant(
        "ort-cuda-fp32",
        "onnxruntime",
        "fp32",
        ("cuda",),
        cuda_only=True,
        describe="ONNX Runtime, CUDA provider",
    ),
    Variant(
        "torch-auto-compile",
        "torch",
        "auto",
        compile=True,
        cuda_only=True,
        describe="torch.compile with CUDA graphs (engine compile=True)",
        first_call_guess_s=60.0,
    ),
    Variant(
        "ort-tensorrt-fp16",
        "onnxruntime",
        "fp16",
        ("tensorrt", "cuda"),
        cuda_only=True,
        describe="ONNX Runtime, TensorRT provider with fp16 kernels",
        first_call_guess_s=60.0,
    ),
    Variant(
        "torch-fp32-compile",
        "torch",
        "fp32",
        compile=True,
        cuda_only=True,
        describe="torch.compile with CUDA graphs, fp32 (not run by default)",
        first_call_guess_s=60.0,
    ),
)
DEFAULT_VARIANTS = tuple(v.name for v in VARIANTS if v.name != "torch-fp32-compile")
# Eager torch variants are held to the authors' references; compiled and ONNX Runtime ones
# to torch fp32 at the timed sizes (a reference case of its own size would cost them one
# more compilation or TensorRT build each).
REFERENCE_VARIANTS = ("torch-fp32", "torch-auto", "torch-fp16", "torch-bf16")


class AssetsError(ValueError):
    """The assets folder lacks something the check needs; the message says what."""


@dataclass
class Budget:
    """The time left of --budget, and whether a step estimated to take so long still fits."""

    seconds: float
    started: float = field(default_factory=time.perf_counter)
    # The last reference check's duration: the next variant's takes about as long.
    reference_s: float | None = None

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.started)

    def skip_reason(self, estimate: float | None) -> str | None:
        left = self.left()
        if left <= 0:
            return f"time budget of {self.seconds:.0f} s spent (--budget)"
        if estimate is not None and estimate > left:
            return f"needs about {estimate:.0f} s, {left:.0f} s left of the --budget"
        return None


def size_name(width: int, height: int) -> str:
    return f"{width}x{height}"


# -- the machine ---------------------------------------------------------------------------


def _nvidia_driver(index: int) -> str:
    """The NVIDIA driver version from nvidia-smi, else the CUDA driver API version."""
    if shutil.which("nvidia-smi"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [
                    "nvidia-smi",
                    "-i",
                    str(index),
                    "--query-gpu=driver_version",
                    "--format=csv,noheader",
                ],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            ).stdout.strip()
            if out:
                return out
    with contextlib.suppress(OSError, AttributeError):
        version = ctypes.c_int()
        if ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(version)) == 0:
            major, minor = version.value // 1000, version.value % 1000 // 10
            return f"unknown (no nvidia-smi; CUDA driver API {major}.{minor})"
    return "unknown (no nvidia-smi, no libcuda.so.1)"


def _cpu() -> dict[str, Any]:
    """CPU model and the flags that decide the CPU precisions (recorded with every figure)."""
    from gifnet_ros.fusion.precision import probe

    model = platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    flags = probe(torch.device("cpu")).cpu_flags
    return {
        "model": model,
        "flags": [flag for flag in CPU_FLAGS if flag in flags],
        "torch_threads": torch.get_num_threads(),
    }


def _onnxruntime() -> dict[str, Any]:
    if importlib.util.find_spec("onnxruntime") is None:
        return {"version": None, "providers": []}
    import onnxruntime as ort

    return {"version": ort.__version__, "providers": ort.get_available_providers()}


def machine_info(device: torch.device) -> dict[str, Any]:
    """Everything a reader needs to place the figures: device, driver, libraries, settings."""
    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    info: dict[str, Any] = {
        "commit": commit,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "onnxruntime": _onnxruntime(),
        "cpu": _cpu(),
        "device": str(device),
    }
    if device.type == "cuda":
        index = device.index or 0
        props = torch.cuda.get_device_properties(index)
        info["gpu"] = {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "driver": _nvidia_driver(index),
        }
        info["tf32"] = {
            "cudnn_conv": torch.backends.cudnn.allow_tf32,
            "matmul": torch.backends.cuda.matmul.allow_tf32,
        }
    return info


def machine_lines(info: dict[str, Any]) -> list[str]:
    ort = info["onnxruntime"]
    ort_text = (
        f"onnxruntime {ort['version']} ({', '.join(ort['providers'])})"
        if ort["version"]
        else "onnxruntime not installed"
    )
    cpu = info["cpu"]
    lines = [
        f"commit {info['commit'] or 'unknown'}, Python {info['python']}, PyTorch {info['torch']} "
        f"(CUDA {info['torch_cuda']}, cuDNN {info['cudnn']}), numpy {info['numpy']}, "
        f"OpenCV {info['opencv']}, {ort_text}",
        f"CPU: {cpu['model']}, flags {' '.join(cpu['flags']) or 'none of ' + ' '.join(CPU_FLAGS)}"
        f", {cpu['torch_threads']} torch threads",
    ]
    if "gpu" in info:
        gpu, tf32 = info["gpu"], info["tf32"]
        lines.append(
            f"GPU: {gpu['name']} (compute {gpu['capability']}, {gpu['memory_gib']} GiB), "
            f"driver {gpu['driver']}; TF32 in cuDNN convolutions "
            f"{'on' if tf32['cudnn_conv'] else 'off'}, in matmul "
            f"{'on' if tf32['matmul'] else 'off'}"
        )
    else:
        lines.append(f"device: {info['device']} (no CUDA figures in this run)")
    return lines


# -- assets --------------------------------------------------------------------------------


def reference_cases(assets: Path) -> list[str]:
    return sorted(p.name[: -len("_y.npy")] for p in (assets / "reference").glob("*_y.npy"))


def check_assets(assets: Path, cases: list[str] | None) -> list[str]:
    """The reference cases to use, or AssetsError naming what the folder lacks."""
    hint = (
        "fill it with: python benchmarks/gpu_check.py --prepare DIR (on a machine with ../shared)"
    )
    if not (assets / "weights" / "Final.model").is_file():
        raise AssetsError(f"assets folder {assets} has no weights/Final.model; {hint}")
    found = reference_cases(assets)
    if not found:
        raise AssetsError(f"assets folder {assets} has no reference/*_y.npy; {hint}")
    chosen = cases or found
    for case in chosen:
        for suffix in ("_a.png", "_b.png", "_y.npy"):
            if not (assets / "reference" / f"{case}{suffix}").is_file():
                raise AssetsError(f"assets folder {assets} lacks reference/{case}{suffix}")
    return chosen


def read_grey(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.ndim != 2:
        raise AssetsError(f"{path} is not a grey image")
    return image


def prepare(target: Path, shared: Path | None, onnx: bool) -> int:
    """Fill `target` from ../shared/gifnet (and export gifnet.onnx), for a GPU machine."""
    from gifnet_ros.fusion.image_files import write_bytes_atomic
    from gifnet_ros.offline.sources import find_shared

    source = (shared or find_shared() or ROOT.parent / "shared") / "gifnet"
    if not (source / "weights" / "Final.model").is_file():
        print(f"gpu_check: no weights/Final.model under {source} (--shared)", file=sys.stderr)
        return 2
    files = [Path("weights") / "Final.model"]
    for case in reference_cases(source):
        files += [
            Path("reference") / f"{case}{suffix}" for suffix in ("_a.png", "_b.png", "_y.npy")
        ]
    for name in files:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(target / name, (source / name).read_bytes())
    print(f"copied {len(files)} files from {source} to {target}")
    if onnx:
        from gifnet_ros.models.gifnet import load_model
        from gifnet_ros.models.onnx import ExportError, export_onnx
        from gifnet_ros.models.weights import WeightsError

        began = time.perf_counter()
        try:
            export_onnx(load_model(target / files[0], "cpu"), target / ONNX_NAME)
        except (ExportError, WeightsError) as exc:
            print(f"no {ONNX_NAME}: {exc} (the ONNX Runtime rows will be unavailable)")
        else:
            print(f"exported {target / ONNX_NAME} in {time.perf_counter() - began:.0f} s")
    print(f"on the GPU machine: python benchmarks/gpu_check.py --assets {target} --json OUT.json")
    return 0


# -- checks ----------------------------------------------------------------------------------


def compare(out: np.ndarray, expected: np.ndarray, precision: str) -> dict[str, Any]:
    """fp32: max |out - expected| ≤ 1e-3; lower precisions: PSNR ≥ 45 dB (0-255 scale).

    Both figures are kept; ``psnr_db`` is None where the two are equal (infinite PSNR)."""
    error = out.astype(np.float64) - expected.astype(np.float64)
    diff = float(np.abs(error).max())
    mse = float(np.mean(error**2))
    db = 10.0 * float(np.log10(255.0**2 / mse)) if mse > 0 else None
    if precision == "fp32":
        return {"max_abs_diff": diff, "psnr_db": db, "pass": diff <= FP32_MAX_DIFF}
    return {"max_abs_diff": diff, "psnr_db": db, "pass": db is None or db >= MIN_PSNR_DB}


def check_text(check: dict[str, Any] | None, precision: str) -> str:
    if check is None:
        return "–"
    mark = "pass" if check["pass"] else "FAIL"
    if check["max_abs_diff"] == 0:
        return f"{mark} (equal)"
    if precision == "fp32":
        return f"{mark} ({check['max_abs_diff']:.1e} ≤ {FP32_MAX_DIFF:g})"
    return f"{mark} ({check['psnr_db']:.1f} dB ≥ {MIN_PSNR_DB:g})"


def worst(checks: list[dict[str, Any]], precision: str) -> dict[str, Any]:
    """The check furthest from passing by the precision's own measure (a failing one first)."""

    def distance(check: dict[str, Any]) -> float:
        if precision == "fp32":
            return check["max_abs_diff"]
        return -math.inf if check["psnr_db"] is None else -check["psnr_db"]

    return max(checks, key=lambda c: (not c["pass"], distance(c)))


def to_device(images: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """uint8 H×W images → N×1×H×W float in [0, 1] on the device (the network's input)."""
    batch = torch.from_numpy(np.stack(images)).float()[:, None] / 255.0
    return batch.to(device)


def run(engine: Any, first: torch.Tensor, second: torch.Tensor) -> np.ndarray:
    """The network through the engine, synchronised; N×H×W on 0-255 (float32, host)."""
    out = engine.run_model(first, second)
    return out[:, 0].cpu().numpy() * 255.0


@contextlib.contextmanager
def tf32_off() -> Iterator[None]:
    """Plain fp32 arithmetic in cuDNN convolutions and matrix products, for one diagnosis."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def reference_check(
    engine: Any, assets: Path, cases: list[str], device: torch.device
) -> dict[str, Any]:
    """Each reference case through the engine's network against the authors' float output."""

    def outputs() -> list[tuple[str, np.ndarray, np.ndarray]]:
        result = []
        for case in cases:
            first, second = (
                to_device([read_grey(assets / "reference" / f"{case}_{w}.png")], device)
                for w in ("a", "b")
            )
            expected = np.load(assets / "reference" / f"{case}_y.npy")
            result.append((case, run(engine, first, second)[0], expected))
        return result

    checks = []
    for case, out, expected in outputs():
        checks.append({"case": case, **compare(out, expected, engine.precision)})
    result: dict[str, Any] = {
        "status": "ok",
        "cases": checks,
        "pass": all(c["pass"] for c in checks),
    }
    tf32 = torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32
    if not result["pass"] and device.type == "cuda" and engine.precision == "fp32" and tf32:
        with tf32_off():
            again = [compare(o, e, "fp32") for _, o, e in outputs()]
        verdict = "pass" if all(c["pass"] for c in again) else "FAIL"
        result["note"] = (
            "fails with TF32 on (PyTorch's cuDNN default); with TF32 off the worst case is "
            f"{worst(again, 'fp32')['max_abs_diff']:.1e} ({verdict})"
        )
    return result


# -- timing ----------------------------------------------------------------------------------


def timing_pairs(
    assets: Path, cases: list[str], height: int, width: int, count: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """`count` real pairs at the size: the reference inputs resized, mirrored left-right,
    upside down or both once they repeat, so that a batch holds different samples (up to
    four times the cases)."""
    firsts, seconds = [], []
    for i in range(count):
        case, flips = cases[i % len(cases)], (i // len(cases)) % 4
        for which, out in (("a", firsts), ("b", seconds)):
            image = cv2.resize(
                read_grey(assets / "reference" / f"{case}_{which}.png"),
                (width, height),
                interpolation=cv2.INTER_AREA,
            )
            if flips:  # OpenCV's flip codes: 1 left-right, 0 upside down, -1 both
                image = cv2.flip(image, {1: 1, 2: 0, 3: -1}[flips])
            out.append(image)
    return firsts, seconds


@dataclass
class Cost:
    """What the variant's last timed row cost, to estimate the next row (budget guard)."""

    seconds_per_pixel: float  # per pair, one timed call
    first_call_extra: float  # the largest first call's time beyond a timed one (compilation)

    def estimate(self, pixels: int, batch: int, runs: int) -> float:
        """Network and end-to-end calls (warm-up and timed), and the single-pair checks."""
        call = self.seconds_per_pixel * pixels * batch
        singles = 2 * call if batch > 1 else 0.0
        return self.first_call_extra + 2 * call * (1 + runs) + singles


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gpu_memory_used(device: torch.device) -> int:
    free, total = torch.cuda.mem_get_info(device)
    return total - free


def time_row(
    engine: Any,
    device: torch.device,
    pairs: tuple[list[np.ndarray], list[np.ndarray]],
    runs: int,
    ort_baseline: int | None,
) -> tuple[dict[str, Any], np.ndarray]:
    """The network: a warm-up call, `runs` timed calls and the batch = single check; then the
    same end to end (``fuse_batch`` on uint8 thermal + RGB images: upload, colour, download)
    with the fuse_batch = fuse check; peak GPU memory over both. Returns the figures and the
    network's output for the batch (N×H×W on 0-255)."""
    first, second = (to_device(images, device) for images in pairs)
    batch = first.shape[0]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    began = time.perf_counter()
    out = run(engine, first, second)
    first_s = time.perf_counter() - began
    times = []
    for _ in range(runs):
        synchronize(device)
        began = time.perf_counter()
        engine.run_model(first, second)
        synchronize(device)
        times.append(time.perf_counter() - began)
    call = statistics.median(times)
    # The grey second input as an RGB picture, so the colour path runs as on a robot.
    images = [(a, cv2.cvtColor(b, cv2.COLOR_GRAY2RGB)) for a, b in zip(*pairs, strict=True)]
    engine.fuse_batch(images)  # warm-up: pinned upload buffers, the colour kernels
    e2e = []
    for _ in range(runs):
        began = time.perf_counter()
        fused = engine.fuse_batch(images)  # ends with the download: synchronised
        e2e.append(time.perf_counter() - began)
    row: dict[str, Any] = {
        "status": "ok",
        "s_per_pair": call / batch,
        "pairs_per_s": batch / call,
        "first_call_s": first_s,
        "e2e_s_per_pair": statistics.median(e2e) / batch,
        "timed_calls": runs,
        "peak_gpu_mib": None,
        "memory_method": "not measured on CPU (benchmarks/memory.py measures RSS)",
        "batch_equals_single": None,
        "fuse_batch_equals_fuse": None,
        "vs_torch_fp32": None,
    }
    if batch > 1:
        singles = [run(engine, first[i : i + 1], second[i : i + 1])[0] for i in range(batch)]
        checks = [compare(out[i], single, engine.precision) for i, single in enumerate(singles)]
        row["batch_equals_single"] = worst(checks, engine.precision)
        checks = [
            compare(f, engine.fuse(*pair), engine.precision)
            for f, pair in zip(fused, images, strict=True)
        ]
        row["fuse_batch_equals_fuse"] = worst(checks, engine.precision)
    if device.type == "cuda" and ort_baseline is None:
        row["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        row["memory_method"] = "torch.cuda.max_memory_allocated"
    elif device.type == "cuda":
        row["peak_gpu_mib"] = (gpu_memory_used(device) - ort_baseline) / 2**20
        row["memory_method"] = ORT_MEMORY
    return row, out


# -- variants --------------------------------------------------------------------------------


def unavailable_reason(variant: Variant, device: torch.device) -> str | None:
    """Why a variant cannot run on this machine at all, before building anything."""
    if variant.cuda_only and device.type != "cuda":
        return (
            f"needs a CUDA device (this run: {device}; PyTorch {torch.__version__}, "
            f"CUDA build {torch.version.cuda})"
        )
    if variant.backend == "onnxruntime" and importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed (onnxruntime-gpu for the CUDA and TensorRT rows)"
    return None


def onnx_model(assets: Path) -> Path:
    """The ONNX file for the ONNX Runtime rows: from the assets, else exported there now."""
    path = assets / ONNX_NAME
    if path.is_file():
        return path
    if importlib.util.find_spec("onnxscript") is None:
        raise ValueError(
            f"no {ONNX_NAME} in {assets}, and exporting one needs the onnx and onnxscript "
            "packages (run --prepare on a machine that has them)"
        )
    from gifnet_ros.models.gifnet import load_model
    from gifnet_ros.models.onnx import export_onnx

    print(f"exporting {path} (about a minute)", file=sys.stderr)
    return export_onnx(load_model(assets / "weights" / "Final.model", "cpu"), path)


def build(variant: Variant, assets: Path, device: torch.device, threads: int | None) -> Any:
    from gifnet_ros.fusion.engine import FusionEngine

    return FusionEngine(
        weights=assets / "weights" / "Final.model",
        device=str(device),
        precision=variant.precision,
        backend=variant.backend,
        onnx_model=onnx_model(assets) if variant.backend == "onnxruntime" else None,
        providers=list(variant.providers) or None,
        compile=variant.compile,
        threads=threads,
    )


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@dataclass
class VariantResult:
    """A variant's engine, reference check and rows, as the tables and the JSON show them."""

    variant: Variant
    args: argparse.Namespace
    status: str = "ok"  # ok | unavailable | skipped | failed (the engine could not be built)
    reason: str | None = None
    precision: str | None = None
    precision_reason: str | None = None
    build_s: float | None = None
    reference: dict[str, Any] | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add_row(self, height: int, width: int, batch: int, **values: Any) -> None:
        self.rows.append(
            {
                "variant": self.variant.name,
                "precision": self.precision,
                "size": size_name(width, height),
                "batch": batch,
                **values,
            }
        )

    def not_run(self, status: str, reason: str) -> VariantResult:
        """Every row of the variant marked with the status and the reason."""
        self.status, self.reason = status, reason
        for width, height in self.args.sizes:
            for batch in self.args.batch:
                self.add_row(height, width, batch, status=status, reason=reason)
        return self

    def summary(self) -> dict[str, Any]:
        return {
            "variant": self.variant.name,
            "describe": self.variant.describe,
            "requested": self.variant.precision,
            "status": self.status,
            "reason": self.reason,
            "precision": self.precision,
            "precision_reason": self.precision_reason,
            "build_s": self.build_s,
            "reference": self.reference,
        }


def check_variant(
    variant: Variant,
    args: argparse.Namespace,
    device: torch.device,
    cases: list[str],
    budget: Budget,
    fp32_outputs: dict[tuple[int, int], np.ndarray],
) -> VariantResult:
    """Build the variant's engine; its reference check (eager torch) and timing rows.

    `fp32_outputs` holds torch fp32's first output per size, filled by the torch-fp32
    variant (first in line) and compared with by the others."""
    result = VariantResult(variant, args)
    reason = unavailable_reason(variant, device)
    if reason is not None:
        return result.not_run("unavailable", reason)
    reason = budget.skip_reason(None)
    if reason is not None:
        return result.not_run("skipped", reason)
    ort_baseline = None
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        ort_baseline = gpu_memory_used(device) if variant.backend == "onnxruntime" else None
    began = time.perf_counter()
    try:
        engine = build(variant, args.assets, device, args.threads)
    except (ValueError, ImportError) as exc:  # an option this machine cannot honour
        return result.not_run("unavailable", one_line(exc))
    except Exception as exc:  # anything else is a failure of the package on this machine
        return result.not_run("failed", one_line(exc))
    result.precision, result.precision_reason = engine.precision, engine.precision_reason
    result.build_s = time.perf_counter() - began
    print(f"{variant.name}: runs {engine.precision} ({engine.precision_reason})", file=sys.stderr)
    if variant.name in REFERENCE_VARIANTS:
        reason = budget.skip_reason(budget.reference_s)
        began = time.perf_counter()
        try:
            result.reference = (
                {"status": "skipped", "reason": reason}
                if reason
                else reference_check(engine, args.assets, cases, device)
            )
        except Exception as exc:  # a kernel or memory failure on this device
            result.reference = {"status": "failed", "reason": one_line(exc)}
        if reason is None:
            budget.reference_s = time.perf_counter() - began
    cost = None
    for width, height in args.sizes:
        for batch in args.batch:
            pixels = height * width
            estimate = variant.first_call_guess_s
            if cost is not None:
                estimate = cost.estimate(pixels, batch, args.runs)
            reason = budget.skip_reason(estimate)
            if reason is not None:
                result.add_row(height, width, batch, status="skipped", reason=reason)
                continue
            pairs = timing_pairs(args.assets, cases, height, width, batch)
            try:
                row, out = time_row(engine, device, pairs, args.runs, ort_baseline)
            except Exception as exc:  # a kernel, provider or compiler failure: report, go on
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                # Too big for this GPU is a fact about the GPU (torch's or ONNX Runtime's
                # allocator), not a failure of the package.
                if (
                    isinstance(exc, torch.cuda.OutOfMemoryError)
                    or "out of memory" in str(exc).lower()
                ):
                    result.add_row(
                        height, width, batch, status="skipped", reason="out of GPU memory"
                    )
                else:
                    result.add_row(height, width, batch, status="failed", reason=one_line(exc))
                continue
            if variant.name == "torch-fp32":
                fp32_outputs.setdefault((height, width), out[0])
            elif (height, width) in fp32_outputs:
                expected = fp32_outputs[(height, width)]
                row["vs_torch_fp32"] = compare(out[0], expected, engine.precision)
            # A new size may need a new compilation or engine build: keep the largest seen.
            extra = max(0.0, row["first_call_s"] - row["s_per_pair"] * batch)
            if cost is not None:
                extra = max(extra, cost.first_call_extra)
            cost = Cost(row["s_per_pair"] / pixels, extra)
            result.add_row(height, width, batch, **row)
            print(
                f"{variant.name} {size_name(width, height)} batch {batch}: "
                f"{row['s_per_pair']:.4g} s/pair",
                file=sys.stderr,
            )
    if variant.compile:
        torch.compiler.reset()  # drop the compiled graphs and their CUDA-graph memory pools
    return result


# -- report ----------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def reference_table(results: list[VariantResult]) -> list[str]:
    lines = [
        "| variant | precision | cases | worst case | result | note |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        name, ref = result.variant.name, result.reference
        if name not in REFERENCE_VARIANTS:
            continue
        if ref is None or ref["status"] != "ok":
            status, reason = (
                (result.status, result.reason) if ref is None else (ref["status"], ref["reason"])
            )
            lines.append(f"| {name} | {result.precision or '–'} | – | – | {status} | {reason} |")
            continue
        bad = worst(ref["cases"], result.precision)
        lines.append(
            f"| {name} | {result.precision} | {len(ref['cases'])} | {bad['case']} | "
            f"{check_text(bad, result.precision)} | {ref.get('note', '')} |"
        )
    return lines


def speed_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| variant | precision | size | batch | s/pair | pairs/s | first call s "
        "| end-to-end s/pair | peak GPU MiB | batch = single | fuse_batch = fuse "
        "| vs torch fp32 | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        precision = row["precision"]
        head = f"| {row['variant']} | {precision or '–'} | {row['size']} | {row['batch']} |"
        if row["status"] != "ok":
            dashes = " – |" * 8
            lines.append(f"{head}{dashes} {row['status']}: {row['reason']} |")
            continue
        note = "memory: mem_get_info (ONNX Runtime)" if row["memory_method"] == ORT_MEMORY else ""
        lines.append(
            f"{head} {_num(row['s_per_pair'])} | {_num(row['pairs_per_s'])} | "
            f"{_num(row['first_call_s'], 3)} | {_num(row['e2e_s_per_pair'])} | "
            f"{_num(row['peak_gpu_mib'], 5)} | "
            f"{check_text(row['batch_equals_single'], precision)} | "
            f"{check_text(row['fuse_batch_equals_fuse'], precision)} | "
            f"{check_text(row['vs_torch_fp32'], precision)} | {note} |"
        )
    return lines


def problems(results: list[VariantResult]) -> list[str]:
    """What went wrong, one line each (empty when every check that ran passed)."""
    out = []
    for result in results:
        name, ref = result.variant.name, result.reference or {}
        if result.status == "failed":
            out.append(f"{name}: engine not built: {result.reason}")
        if ref.get("status") == "failed":
            out.append(f"{name}: reference check did not run: {ref['reason']}")
        elif ref.get("status") == "ok" and not ref["pass"]:
            out.append(f"{name}: reference check failed")
        for row in result.rows:
            where = f"{name} {row['size']} batch {row['batch']}"
            if row["status"] == "failed" and result.status != "failed":
                out.append(f"{where}: {row['reason']}")
            for key in ("batch_equals_single", "fuse_batch_equals_fuse", "vs_torch_fp32"):
                if row.get(key) is not None and not row[key]["pass"]:
                    out.append(f"{where}: {key} failed")
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="GPU check: reference equivalence and speed of every GPU path (see the "
        "module docstring)."
    )
    p.add_argument(
        "--assets",
        type=Path,
        default=DEFAULT_ASSETS,
        help="folder laid out as ../shared/gifnet (default .gpu_assets)",
    )
    p.add_argument(
        "--prepare",
        type=Path,
        metavar="DIR",
        help="fill DIR from ../shared/gifnet (and export gifnet.onnx), then exit",
    )
    p.add_argument(
        "--shared",
        type=Path,
        help="the shared folder for --prepare (default: $GIFNET_SHARED or ../shared)",
    )
    p.add_argument("--no-onnx", action="store_true", help="--prepare copies only; no ONNX export")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    p.add_argument(
        "--sizes",
        nargs="+",
        type=fusion_width_height,
        default=[(640, 512), (1280, 1024)],
        metavar="WxH",
        help="default 640x512 1280x1024",
    )
    p.add_argument("--batch", nargs="+", type=int, default=[1, 8], help="batch sizes (default 1 8)")
    p.add_argument(
        "--runs", type=int, default=3, help="timed calls per row after one warm-up call (default 3)"
    )
    p.add_argument(
        "--variants",
        nargs="+",
        choices=[v.name for v in VARIANTS],
        default=list(DEFAULT_VARIANTS),
        help=f"default: {' '.join(DEFAULT_VARIANTS)}",
    )
    p.add_argument("--cases", nargs="+", help="reference cases (default: all in the assets)")
    p.add_argument(
        "--budget",
        type=float,
        default=270.0,
        help="seconds; rows that do not fit are skipped (default 270)",
    )
    p.add_argument("--threads", type=int, help="torch CPU threads (default: PyTorch's)")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON")
    args = p.parse_args(argv)
    if min(args.batch) < 1 or args.runs < 1 or args.budget < 0:
        p.error("--batch and --runs need values of at least 1, --budget at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.prepare is not None:
        return prepare(args.prepare, args.shared, not args.no_onnx)
    try:
        from gifnet_ros.fusion.engine import resolve_device
    except ModuleNotFoundError as exc:  # the GPU machine's Python may lack a dependency
        package = Path(gifnet_ros.__file__).resolve().parent
        importer = [
            path
            for frame, _ in traceback.walk_tb(exc.__traceback__)
            if package in (path := Path(frame.f_code.co_filename).resolve()).parents
        ]
        where = importer[-1].relative_to(package.parent).as_posix() if importer else "gifnet_ros"
        print(
            f"gpu_check: {where} imports {exc.name!r}, which this Python lacks; "
            "install it beside PyTorch (its wheel can travel with the assets)",
            file=sys.stderr,
        )
        return 2
    try:
        cases = check_assets(args.assets, args.cases)
    except AssetsError as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        print(
            f"gpu_check: {exc} (the check needs PyTorch's CUDA build: README, 'GPU check'; "
            "--device cpu checks its logic alone)",
            file=sys.stderr,
        )
        return 2
    budget = Budget(args.budget)
    machine = machine_info(device)
    print("\n".join(machine_lines(machine)))
    results: list[VariantResult] = []
    fp32_outputs: dict[tuple[int, int], np.ndarray] = {}
    for variant in VARIANTS:
        if variant.name in args.variants:
            results.append(check_variant(variant, args, device, cases, budget, fp32_outputs))
    rows = [row for result in results for row in result.rows]
    found = problems(results)
    elapsed = time.perf_counter() - budget.started
    print(
        f"\nReference equivalence ({len(cases)} cases; fp32: max |diff| ≤ {FP32_MAX_DIFF:g} "
        f"on 0-255, else PSNR ≥ {MIN_PSNR_DB:g} dB):"
    )
    print("\n".join(reference_table(results)))
    print(f"\nNetwork time per pair (median of {args.runs} timed calls after one warm-up call):")
    print("\n".join(speed_table(rows)))
    print()
    for result in results:
        if result.precision_reason:
            print(f"{result.variant.name} runs {result.precision}: {result.precision_reason}")
    print(f"{len(found)} problem(s) in {elapsed:.0f} s" + "".join(f"\n  {p}" for p in found))
    if args.json is not None:
        from gifnet_ros.fusion.image_files import write_bytes_atomic

        report = {
            "machine": machine,
            "settings": {
                "device": str(device),
                "sizes": [size_name(*size) for size in args.sizes],
                "batch": args.batch,
                "runs": args.runs,
                "budget_s": args.budget,
                "cases": cases,
                "thresholds": {"fp32_max_abs_diff": FP32_MAX_DIFF, "min_psnr_db": MIN_PSNR_DB},
            },
            "variants": [result.summary() for result in results],
            "rows": rows,
            "problems": found,
            "elapsed_s": elapsed,
        }
        write_bytes_atomic(args.json, (json.dumps(report, indent=2) + "\n").encode())
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
