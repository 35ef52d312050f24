"""ONNX export of GIFNet or TIM and an ONNX Runtime session that runs it.

The exported graph takes two 1×1×H×W float32 inputs (``first``, ``second``,
values in [0, 1]; for TIM the thermal then the visible image) and returns the
fused 1×1×H×W luminance (TIM's unclamped, as its torch module gives it).
Height and width are symbolic in the graph:

- GIFNet: any H, W ≥ 8, including the reflection padding to multiples of 4
  and 8, the shifted windows and the crops (see the traced path of
  gifnet_ros.models.gifnet).
- TIM ``tim_light``: any H, W ≥ 8; it needs no padding.
- TIM ``tim`` (ivif): H and W are declared as multiples of 4 (4·k, k ≥ 2).
  Its first stage works at 1/2 and 1/4 size: with TIM.forward's padding in
  the graph, torch.export specialises on it (guards that H and W are
  multiples of 4 and that halving and doubling gives them back, which fail
  for a general size; its own suggested fix is H = 4·k), so the graph holds
  TIM.fuse_padded and the padding happens outside it: the session
  (OnnxGIFNet) reflection-pads the bottom and right to the next multiple of 4
  with gifnet_ros.models.tim.pad_to_multiple, the same call TIM.forward makes, and
  crops the result back to H×W. The file records the network and the
  multiple in its metadata (``gifnet_ros.models.gifnet``,
  ``gifnet_ros.size_multiple``), so a session needs nothing else to run it.

The export uses torch.export (opset 18 by default) and needs the ``onnx`` and
``onnxscript`` packages; running it needs ``onnxruntime``
(``onnxruntime-gpu`` for the CUDA and TensorRT providers).

Robots without PyTorch's CUDA build, e.g. a Jetson with ONNX Runtime and
TensorRT, export once on any machine (``gifnet-export``, gifnet_ros.tools.export)
and pass the file to the engine
(``FusionEngine(backend="onnxruntime", onnx_model=PATH)``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from gifnet_ros.models import MIN_SIZE, tim
from gifnet_ros.models import gifnet as gifnet_module
from gifnet_ros.models.gifnet import GIFNet
from gifnet_ros.models.tim import NETWORK_VARIANTS, TIM, pad_to_multiple, weights_digest
from gifnet_ros.models.weights import cache_path, resolve_weights, sha256_file

if TYPE_CHECKING:  # imported where a session is made: the package runs without onnxruntime
    import onnxruntime as ort

OPSET = 18
INPUT_NAMES = ("first", "second")
OUTPUT_NAME = "fused"
# ONNX Runtime execution providers by the short names the engine, node and tools accept.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
NETWORKS = ("gifnet", *NETWORK_VARIANTS)
# Traced at this size: not a multiple of 8, so no padding step can be mistaken for a no-op
# (a multiple of 4, as TIM's ivif graph takes).
_SAMPLE_SIZE = (36, 44)
# Metadata keys of the exported file: which network it holds, and the multiple its graph
# needs H and W to be (the session pads to it).
NETWORK_KEY = "gifnet_ros.network"
MULTIPLE_KEY = "gifnet_ros.size_multiple"
_TIM_NETWORKS = {variant: name for name, variant in NETWORK_VARIANTS.items()}


class ExportError(ValueError):
    """An export or ONNX Runtime set-up failed; the message is one line naming the cause.

    A ValueError, like the engine's other configuration errors (an unknown
    device, a precision the device lacks), so callers handle them alike."""


def default_onnx_path(
    weights: str | Path | None = None, opset: int = OPSET, network: str = "gifnet"
) -> Path:
    """Where the engine keeps its export: beside the checkpoint cache, named by the network
    and a digest of its weights file(s), its source (gifnet_ros/models/gifnet.py or tim.py), the
    opset and the torch version, so that an export never outlives the code or weights it
    was made from. TIM's ``weights`` as load_tim takes them (None: the project's own)."""
    if network not in NETWORKS:
        raise ExportError(f"unknown network {network!r} (expected one of {NETWORKS})")
    digest = hashlib.sha256()
    if network == "gifnet":
        digest.update(sha256_file(resolve_weights(weights)).encode())
        digest.update(Path(gifnet_module.__file__).read_bytes())
    else:
        digest.update(weights_digest(NETWORK_VARIANTS[network], weights).encode())
        digest.update(Path(tim.__file__).read_bytes())
    digest.update(f"{opset} {torch.__version__}".encode())
    return cache_path().parent / f"{network}-{digest.hexdigest()[:16]}-opset{opset}.onnx"


class _PaddedTIM(nn.Module):
    """TIM.fuse_padded as a module's forward: the part of TIM that its export holds."""

    def __init__(self, model: TIM) -> None:
        super().__init__()
        self.model = model

    def forward(self, ir: Tensor, vis: Tensor) -> Tensor:
        return self.model.fuse_padded(ir, vis)


def _size_dim(name: str, multiple: int) -> torch.export.Dim:
    """A symbolic image size of at least MIN_SIZE that is a multiple of ``multiple``."""
    if multiple == 1:
        return torch.export.Dim(name, min=MIN_SIZE)
    return multiple * torch.export.Dim(f"{name}_over_{multiple}", min=-(-MIN_SIZE // multiple))


def export_onnx(model: GIFNet | TIM, path: str | Path, opset: int = OPSET) -> Path:
    """Write `model` (float32, CPU) as an ONNX file with symbolic H and W; returns the path.

    For TIM the graph holds TIM.fuse_padded, whose sizes are multiples of
    ``model.size_multiple``; the module docstring says how the session pads around it.
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
    if isinstance(model, TIM):
        name, multiple = _TIM_NETWORKS[model.variant], model.size_multiple
        traced: nn.Module = _PaddedTIM(model)
    else:
        name, traced, multiple = "gifnet", model, 1
    sample = torch.rand(1, 1, *_SAMPLE_SIZE)
    dims = {2: _size_dim("height", multiple), 3: _size_dim("width", multiple)}
    with torch.inference_mode(False), torch.no_grad():
        program = torch.export.export(
            traced, (sample, sample.clone()), dynamic_shapes=(dims, dims), strict=False
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
    onnx_program.model.metadata_props.update({NETWORK_KEY: name, MULTIPLE_KEY: str(multiple)})
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


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """The ONNX Runtime session options of the engine's sessions, each choice measured
    (benchmarks/onnxruntime_memory.py prints them side by side with the earlier ones)."""
    import onnxruntime as ort

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
    # No planned buffer reuse: ONNX Runtime's allocation planner lets a later tensor take over
    # the buffer of an earlier one whose (symbolic) size matches, and with this graph that kept
    # about twice the live tensors resident during a run (640×480 peak RSS 3.1 GB with it,
    # 1.7 GB without, and no slower: the arena still recycles freed blocks).
    options.enable_mem_reuse = False
    return options


class OnnxGIFNet:
    """An ONNX Runtime session for an exported GIFNet or TIM, called like the torch module:
    (first, second) N×1×H×W float tensors → fused N×1×H×W float32 tensor on their device.

    Inputs and output are bound in place (I/O binding): CPU tensors without a
    copy, CUDA tensors on the GPU, so a CUDA or TensorRT session adds no host
    round trip. `fp16` enables TensorRT's half-precision kernels (the graph
    itself stays float32). ``network`` is the network the file holds (from its
    metadata; files without it are GIFNet exports); where its graph takes sizes
    that are multiples of ``size_multiple`` (TIM ivif: 4), the inputs are
    reflection-padded at the bottom and right to them (tim.pad_to_multiple,
    as TIM.forward pads) and the result cropped back. ``options`` replaces
    session_options(threads), for benchmarks that compare session options.
    """

    def __init__(
        self,
        path: str | Path,
        providers: Sequence[str] = ("cpu",),
        threads: int | None = None,
        fp16: bool = False,
        options: ort.SessionOptions | None = None,
    ) -> None:
        import onnxruntime as ort

        self.providers = provider_names(providers)
        if fp16 and PROVIDERS["tensorrt"] not in self.providers:
            raise ExportError("fp16 with ONNX Runtime needs the TensorRT provider")
        options = options or session_options(threads)
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
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.network = metadata.get(NETWORK_KEY, "gifnet")
        self.size_multiple = int(metadata.get(MULTIPLE_KEY, "1"))

    def __call__(self, first: Tensor, second: Tensor) -> Tensor:
        height, width = first.shape[-2:]
        first, second = (pad_to_multiple(t, self.size_multiple) for t in (first, second))
        fused = [self._run(a[None], b[None]) for a, b in zip(first, second, strict=True)]
        return torch.cat(fused)[..., :height, :width]

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
