"""ONNX export of GIFNet and an ONNX Runtime session that runs it: ``gifnet-export``.

The exported graph takes two 1×1×H×W float32 inputs (``first``, ``second``,
values in [0, 1]) and returns the fused 1×1×H×W luminance, for any H, W ≥ 8:
height and width are symbolic in the graph, including the reflection padding
to multiples of 4 and 8, the shifted windows and the crops (see the traced
path of gifnet_ros.network). The export uses torch.export (opset 18 by
default) and needs the ``onnx`` and ``onnxscript`` packages; running it needs
``onnxruntime`` (``onnxruntime-gpu`` for the CUDA and TensorRT providers).

Robots without PyTorch's CUDA build, e.g. a Jetson with ONNX Runtime and
TensorRT, export once on any machine and pass the file to the engine
(``FusionEngine(backend="onnxruntime", onnx_model=PATH)``).

    gifnet-export                       # into the per-user cache, where the engine looks
    gifnet-export -o gifnet.onnx --check
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gifnet_ros import network
from gifnet_ros.network import GIFNet, load_model
from gifnet_ros.weights import WeightsError, cache_path, resolve_weights, sha256_file

OPSET = 18
INPUT_NAMES = ("first", "second")
OUTPUT_NAME = "fused"
# ONNX Runtime execution providers by the short names the engine, node and tools accept.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
# Traced at this size: not a multiple of 8, so no padding step can be mistaken for a no-op.
_SAMPLE_SIZE = (36, 44)


class ExportError(ValueError):
    """An export or ONNX Runtime set-up failed; the message is one line naming the cause.

    A ValueError, like the engine's other configuration errors (an unknown
    device, a precision the device lacks), so callers handle them alike."""


def default_onnx_path(weights: str | Path | None = None, opset: int = OPSET) -> Path:
    """Where the engine keeps its export: beside the checkpoint cache, named by a digest of
    the checkpoint, the network's source, the opset and the torch version, so that an
    export never outlives the code or weights it was made from."""
    digest = hashlib.sha256()
    digest.update(sha256_file(resolve_weights(weights)).encode())
    digest.update(Path(network.__file__).read_bytes())
    digest.update(f"{opset} {torch.__version__}".encode())
    return cache_path().parent / f"gifnet-{digest.hexdigest()[:16]}-opset{opset}.onnx"


def export_onnx(model: GIFNet, path: str | Path, opset: int = OPSET) -> Path:
    """Write `model` (float32, CPU) as an ONNX file with symbolic H and W; returns the path.

    The file appears whole or not at all (written beside the target, then renamed).
    """
    path = Path(path)
    if opset < 17:
        raise ExportError(f"opset {opset} is too old: the export needs opset 17 or newer")
    try:
        import onnxscript  # noqa: F401 (torch's ONNX exporter needs it; fail with a clear line)
    except ImportError as exc:
        raise ExportError("ONNX export needs the 'onnx' and 'onnxscript' packages") from exc
    model = model.float().cpu().eval()
    sample = torch.rand(1, 1, *_SAMPLE_SIZE)
    height = torch.export.Dim("height", min=8)
    width = torch.export.Dim("width", min=8)
    dims = {2: height, 3: width}
    with torch.inference_mode(False), torch.no_grad():
        program = torch.export.export(
            model, (sample, sample.clone()), dynamic_shapes=(dims, dims), strict=False
        )
        onnx_program = torch.onnx.export(
            program,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamo=True,
            optimize=False,  # ONNX Runtime optimises the graph itself when it loads it
            verbose=False,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=path.name, suffix=".part", dir=path.parent)
    os.close(handle)
    try:
        onnx_program.save(partial)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return path


def split_providers(text: str) -> list[str]:
    """Provider names from a comma-separated list (the node parameter and the tools' flag)."""
    return [name.strip() for name in text.split(",") if name.strip()]


def provider_names(names: Sequence[str]) -> list[str]:
    """Short (cpu, cuda, tensorrt) or full ONNX Runtime provider names → full names, checked
    against what this onnxruntime build offers; ExportError names what is missing."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    full = [PROVIDERS.get(name.lower(), name) for name in names]
    missing = [name for name in full if name not in available]
    if missing:
        raise ExportError(
            f"ONNX Runtime provider {missing[0]} is not available in this onnxruntime "
            f"{ort.__version__} (available: {', '.join(available)}); CUDA and TensorRT need "
            "the onnxruntime-gpu build (on Jetson, NVIDIA's onnxruntime wheel)"
        )
    return full


class OnnxGIFNet:
    """An ONNX Runtime session for an exported GIFNet, called like the torch module:
    (first, second) N×1×H×W float tensors → fused N×1×H×W float32 tensor on their device.

    Inputs and output are bound in place (I/O binding): CPU tensors without a
    copy, CUDA tensors on the GPU, so a CUDA or TensorRT session adds no host
    round trip. `fp16` enables TensorRT's half-precision kernels (the graph
    itself stays float32).
    """

    def __init__(
        self,
        path: str | Path,
        providers: Sequence[str] = ("cpu",),
        threads: int | None = None,
        fp16: bool = False,
    ) -> None:
        import onnxruntime as ort

        self.providers = provider_names(providers)
        if fp16 and PROVIDERS["tensorrt"] not in self.providers:
            raise ExportError("fp16 with ONNX Runtime needs the TensorRT provider")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # Idle worker threads sleep instead of spinning: on a robot the cores between two
        # frames belong to the other nodes (and, in benchmarks, to the next variant).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # No memory pattern: with symbolic H and W, ONNX Runtime records one per input shape
        # and allocates it as one more block beside its arena, so resident memory grew with
        # every pair size seen (640×480: 3.0 GB after the first pair, 5.7 GB after the
        # second, 6.0 GB after a new size). Without it the arena serves every shape and stays
        # near its first-pair size (benchmarks/README.md, "ONNX Runtime memory").
        options.enable_mem_pattern = False
        provider_options = [
            {"trt_fp16_enable": True} if fp16 and name == PROVIDERS["tensorrt"] else {}
            for name in self.providers
        ]
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=self.providers, provider_options=provider_options
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(f"cannot load ONNX model {path}: {message}") from exc

    def __call__(self, first: Tensor, second: Tensor) -> Tensor:
        return torch.cat([self._run(a[None], b[None]) for a, b in zip(first, second, strict=True)])

    def _run(self, first: Tensor, second: Tensor) -> Tensor:
        binding = self.session.io_binding()
        out = torch.empty_like(first, dtype=torch.float32)
        kind = "cuda" if first.device.type == "cuda" else "cpu"
        index = first.device.index or 0
        # Bound by address only: the converted inputs must outlive the run, so keep them here.
        inputs = [tensor.float().contiguous() for tensor in (first, second)]
        for name, tensor in zip(INPUT_NAMES, inputs, strict=True):
            binding.bind_input(name, kind, index, np.float32, list(tensor.shape), tensor.data_ptr())
        binding.bind_output(OUTPUT_NAME, kind, index, np.float32, list(out.shape), out.data_ptr())
        self.session.run_with_iobinding(binding)
        return out


def _check(model: GIFNet, path: Path) -> float:
    """ONNX Runtime (CPU) against the torch model on two sizes of random input."""
    session = OnnxGIFNet(path)
    worst = 0.0
    for height, width in ((61, 75), (96, 128)):
        first, second = torch.rand(2, 1, 1, height, width)
        with torch.inference_mode():
            expected = model(first, second)
        got = session(first, second)
        error = float((got - expected).abs().max()) * 255.0
        worst = max(worst, error)
        print(f"{width}x{height}: max |onnxruntime - torch| = {error:.2e} (0-255 scale)")
    return worst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="gifnet-export",
        description="Export GIFNet to ONNX with dynamic height and width.",
    )
    p.add_argument("--weights", help="checkpoint (default: GIFNET_WEIGHTS or the user cache)")
    p.add_argument(
        "-o", "--output", type=Path, help="ONNX file (default: the cache path the engine uses)"
    )
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    p.add_argument(
        "--no-verify-hash", action="store_true", help="accept a checkpoint of another hash"
    )
    p.add_argument(
        "--check", action="store_true", help="compare ONNX Runtime (CPU) with torch afterwards"
    )
    args = p.parse_args(argv)
    try:
        model = load_model(args.weights, "cpu", verify_hash=not args.no_verify_hash)
        output = args.output or default_onnx_path(args.weights, args.opset)
        began = time.perf_counter()
        export_onnx(model, output, args.opset)
        print(f"wrote {output} in {time.perf_counter() - began:.0f} s (opset {args.opset})")
        if args.check and _check(model, output) > 1e-3:
            print("error: ONNX Runtime differs from torch by more than 1e-3", file=sys.stderr)
            return 1
    except (WeightsError, ValueError, OSError) as exc:
        print(f"gifnet-export: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
