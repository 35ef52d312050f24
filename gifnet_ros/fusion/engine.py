"""The fusion engine: device, precision and colour around the GIFNet network.

The network fuses luminance only. The engine turns the camera images into
the two network inputs (docs/network.md#colour: Y of YCbCr, truncated to
uint8, or a normalised thermal frame), runs the network, and puts colour back
from whichever input the mode names as the chroma source.

Everything from the uploaded uint8 images to the uint8 result happens on the
engine's device, so on CUDA the only transfers are one upload per input and
one download of the result: no host synchronisation inside a fusion.

Chroma source per mode:

- ``thermal_rgb``, ``nir_rgb``: the second (RGB) image; a colour first image
  contributes only its luminance.
- ``medical``: the first image (e.g. PET); the second (MRI) is grey.
- ``multi_focus``, ``multi_exposure``: both, mixed per pixel and channel by
  the chroma rule (below).
- ``grey``: none; the result is always the grey fused luminance.

When the chroma source is grey the result is grey (H×W).

Chroma rule for two colour inputs (``chroma_rule``): ``neutral`` (default)
weights each input's chroma c by |c|, its distance from neutral grey in the
offset-free YCbCr used here, so the more saturated input wins; ``authors``
weights by |c - 128|, which reproduces the authors' published images
(their script omits the +128 chroma offset but weights as if it were there).

The options (network, backend, device, precision, threads, compile, the reduced-size
fusion, ...) are one EngineOptions (gifnet_ros.fusion.options, which documents them); an engine
takes that value or its fields as arguments. Building an engine makes process-wide settings
(threads, TF32, the allocator): gifnet_ros.fusion.process names them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the conventional torch alias)
from torch import Tensor

from gifnet_ros.fusion.allocator import release_freed_memory
from gifnet_ros.fusion.options import EngineOptions
from gifnet_ros.fusion.precision import (
    PRECISIONS,
    choose_backend,
    choose_precision,
    instruction_set,
    probe,
)
from gifnet_ros.fusion.process import configure_process
from gifnet_ros.fusion.thermal import normalize_thermal
from gifnet_ros.models import MIN_SIZE
from gifnet_ros.models.classic import METHODS as CLASSIC_METHODS
from gifnet_ros.models.classic import fuse_grey
from gifnet_ros.models.gifnet import load_model
from gifnet_ros.models.onnx import NETWORKS, OnnxGIFNet, default_onnx_path, export_onnx
from gifnet_ros.models.tim import NETWORK_VARIANTS, load_tim

MODES = ("thermal_rgb", "nir_rgb", "multi_focus", "multi_exposure", "medical", "grey")
CHROMA_RULES = ("neutral", "authors")
CLASSIC_BACKENDS = tuple(f"classic_{method}" for method in CLASSIC_METHODS)
BACKENDS = ("auto", "torch", "onnxruntime", *CLASSIC_BACKENDS)
RESTORE_RULES = ("detail", "bilinear")
# The modes TIM has weights for: infrared/visible fusion (in colour or grey).
TIM_MODES = ("thermal_rgb", "grey")
# Pinned upload buffers kept per (input and batch slot, shape, dtype): two per pair of a batch
# of up to 16; a robot's cameras rarely change size.
_PINNED_BUFFERS = 32
_CHROMA_SOURCES = {
    "thermal_rgb": (False, True),
    "nir_rgb": (False, True),
    "medical": (True, False),
    "multi_focus": (True, True),
    "multi_exposure": (True, True),
    "grey": (False, False),
}

# docs/network.md#colour: forward (offset-free) and inverse YCbCr.
_RGB_TO_YCBCR = torch.tensor(
    [[0.299, 0.587, 0.114], [-0.169, -0.331, 0.5], [0.5, -0.419, -0.081]], dtype=torch.float32
)
_CBCR_TO_RGB = torch.tensor(
    [[0.0, 1.402], [-0.344136, -0.714136], [1.772, 0.0]], dtype=torch.float32
)


def resolve_device(spec: str) -> torch.device:
    """Turn ``auto|cpu|cuda|cuda:N`` into a device, or raise ValueError saying why not."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        index = spec[5:]
        if index and not index.isdigit():
            raise ValueError(f"device {spec!r}: expected cuda:N with N a device number")
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {spec!r} requested but PyTorch sees no CUDA device "
                f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); use 'cpu'"
            )
        count = torch.cuda.device_count()
        if index and int(index) >= count:
            raise ValueError(f"device {spec!r} requested but only {count} CUDA device(s) exist")
        return torch.device(spec)
    raise ValueError(f"unknown device {spec!r} (expected auto, cpu, cuda or cuda:N)")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a concrete precision on a device (None for fp32), or ValueError."""
    if precision not in PRECISIONS[1:]:
        raise ValueError(f"unknown precision {precision!r} (expected one of {PRECISIONS})")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision 'fp16' needs a CUDA device; on CPU use 'bf16' or 'fp32'")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def check_options(
    backend: str, device: str, precision: str, compile: bool = False, network: str = "gifnet"
) -> torch.device:
    """The device an engine with these options runs on, or ValueError naming the conflict.

    One place for the rules that tie backend, device and precision together, so the node can
    reject a parameter change before it starts a reload that would fail. ``auto`` fits every
    backend and device (gifnet_ros.fusion.precision picks what each can do).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} (expected one of {BACKENDS})")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (expected one of {PRECISIONS})")
    if compile and backend not in ("auto", "torch"):
        raise ValueError(f"compile applies to the torch backend only, not {backend!r}")
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r} (expected one of {NETWORKS})")
    if backend in CLASSIC_BACKENDS:
        if device not in ("auto", "cpu"):
            raise ValueError(
                f"backend {backend!r} runs on the CPU (numpy/OpenCV): device must be auto or "
                f"cpu, got {device!r}"
            )
        if precision not in ("auto", "fp32"):
            raise ValueError(f"backend {backend!r} computes in fp32 only, got {precision!r}")
        return torch.device("cpu")
    resolved = resolve_device(device)
    if precision == "auto":
        return resolved
    autocast_dtype(precision, resolved)
    if backend == "onnxruntime" and precision == "bf16":
        raise ValueError("precision 'bf16' is not available with onnxruntime")
    return resolved


def _classic_luminance(method: str, first: Tensor, second: Tensor) -> Tensor:
    """A classical rule per sample of two N×1×H×W inputs in [0, 1]: the fused N×H×W on 0-255
    (float32)."""
    return torch.stack(
        [
            torch.from_numpy(
                fuse_grey(method, a[0].cpu().numpy() * 255.0, b[0].cpu().numpy() * 255.0)
            )
            for a, b in zip(first, second, strict=True)
        ]
    )


def _upsample(image: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(image, size, mode="bilinear", align_corners=False)


def _onnx_session(options: EngineOptions, device: torch.device, fp16: bool) -> OnnxGIFNet:
    """An ONNX Runtime session for the engine: the given ONNX file, or the cached export of
    the network with these weights (exported on first use: about a minute for GIFNet,
    seconds for TIM). A file exported from another network is refused."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ValueError("backend 'onnxruntime' needs the onnxruntime package") from exc
    network, weights, onnx_model = options.network, options.weights, options.onnx_model
    if onnx_model is None:
        onnx_model = default_onnx_path(weights, network=network)
        if not onnx_model.is_file():
            model = _load_network(network, weights, torch.device("cpu"), options.verify_hash)
            export_onnx(model, onnx_model)
    elif not Path(onnx_model).is_file():
        raise ValueError(f"ONNX model {onnx_model} not found (write one with gifnet-export)")
    names = options.providers or (["cuda", "cpu"] if device.type == "cuda" else ["cpu"])
    session = OnnxGIFNet(onnx_model, names, options.threads, fp16)
    if session.network != network:
        raise ValueError(
            f"ONNX model {onnx_model} is an export of {session.network}, not of network "
            f"{network!r} (export it with gifnet-export --network {network})"
        )
    return session


def _load_network(
    network: str, weights: str | Path | None, device: torch.device, verify_hash: bool
) -> torch.nn.Module:
    """GIFNet, or TIM with its weights: the project's by default, the authors' ivif pair as
    ``"model_1.pt,model_2.pt"`` (one string, as a flag or a node parameter gives it)."""
    if network == "gifnet":
        return load_model(weights, device, verify_hash=verify_hash)
    return load_tim(NETWORK_VARIANTS[network], weights, device)


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


class _Unset:
    """The default of FusionEngine's option arguments. Not EngineOptions' own defaults: the
    engine must tell a field the caller named from one left out, so that
    ``FusionEngine(options, device="auto")`` sets the device back to ``auto`` while
    ``FusionEngine(options)`` keeps the options' device."""

    def __repr__(self) -> str:
        return "<EngineOptions' default>"  # what help() shows for each default


_UNSET: Any = _Unset()  # Any: the default of arguments of every type


class FusionEngine:
    """Fuse a pair of camera images with GIFNet; see the module docstring for colour."""

    MODES = MODES

    def __init__(
        self,
        options: EngineOptions | str | Path | None = None,
        device: str = _UNSET,
        precision: str = _UNSET,
        mode: str = _UNSET,
        *,
        weights: str | Path | None = _UNSET,
        thermal_norm: str = _UNSET,
        thermal_range: tuple[float, float] = _UNSET,
        thermal_percentiles: tuple[float, float] = _UNSET,
        chroma_rule: str = _UNSET,
        verify_hash: bool = _UNSET,
        backend: str = _UNSET,
        onnx_model: str | Path | None = _UNSET,
        providers: Sequence[str] | None = _UNSET,
        threads: int | None = _UNSET,
        compile: bool = _UNSET,
        max_pixels: int | None = _UNSET,
        inference_scale: float = _UNSET,
        restore: str = _UNSET,
        network: str = _UNSET,
    ) -> None:
        """``FusionEngine(options)`` with an EngineOptions, ``FusionEngine(options, mode=...)``
        to change some of its fields, or the fields alone: ``FusionEngine(weights, device,
        precision, mode, backend=..., ...)``, the weights (or None) in place of the options.
        The arguments are EngineOptions' fields, which gifnet_ros.fusion.options documents
        with their defaults; a field left out keeps the options' value or that default."""
        arguments = dict(locals())  # nothing but the parameters yet
        fields = arguments.keys() - {"self", "options"}
        named = {k: arguments[k] for k in fields if arguments[k] is not _UNSET}
        if isinstance(options, EngineOptions):
            options = dataclasses.replace(options, **named)
        else:
            if options is not None:  # the fields alone: the weights stand first
                if "weights" in named:
                    raise TypeError("FusionEngine() got the weights twice, first and by name")
                named["weights"] = options
            options = EngineOptions(**named)
        backend, precision, network = options.backend, options.precision, options.network
        self.device = check_options(backend, options.device, precision, options.compile, network)
        # The backend and precision it runs at ("fp32", "bf16" or "fp16"), and why: what the
        # node's diagnostics and the tools' reports show.
        capabilities = probe(self.device)
        self.backend, self.backend_reason = backend, "requested"
        if backend == "auto":
            installed = importlib.util.find_spec("onnxruntime") is not None
            self.backend, self.backend_reason = choose_backend(
                self.device.type, capabilities, precision, options.compile, installed, network
            )
        backend = self.backend
        self.precision, self.precision_reason = precision, "requested"
        if precision == "auto":
            self.precision, self.precision_reason = choose_precision(
                backend, self.device.type, capabilities, options.providers
            )
        # What the products run on (AMX, AVX-512 BF16, AVX2, ...): the speed depends on it.
        self.instruction_set = instruction_set(
            capabilities, self.device.type, backend, self.precision
        )
        # Settable attributes (the node sets the mode and the reduced-size options per pair),
        # checked here and again per pair.
        self.network = network
        self.mode = options.mode
        self.chroma_rule = options.chroma_rule
        self.thermal_norm = options.thermal_norm
        self.thermal_range = options.thermal_range
        self.thermal_percentiles = options.thermal_percentiles
        self.max_pixels = options.max_pixels
        self.inference_scale = options.inference_scale
        self.restore = options.restore
        self._check_choices()  # mode and chroma rule now, not at first use
        self.inference_size(64, 64)  # the same for the three size options above
        configure_process(self.device, backend, self.precision, options.threads)
        self._graphs = False
        self._network: Callable[[Tensor, Tensor], Tensor]
        self._autocast = autocast_dtype(self.precision, self.device) if backend == "torch" else None
        self.model: torch.nn.Module | OnnxGIFNet | None = None
        # The classical rule's name for a classic_* backend, else None.
        self._classic = backend.removeprefix("classic_") if backend in CLASSIC_BACKENDS else None
        if self._classic is not None:
            self._network = self._classic_batch
        elif backend == "torch":
            self.model = _load_network(network, options.weights, self.device, options.verify_hash)
            self._network = self.model
            if options.compile:
                self._graphs = self.device.type == "cuda"
                compile_options = {"mode": "reduce-overhead"} if self._graphs else {}
                self._network = torch.compile(self.model, dynamic=False, **compile_options)
        else:
            self.model = _onnx_session(options, self.device, self.precision == "fp16")
            self._network = self.model
        self._rgb_to_ycbcr = _RGB_TO_YCBCR.to(self.device)
        self._cbcr_to_rgb = _CBCR_TO_RGB.to(self.device)
        self._pinned: dict[tuple[str, tuple[int, ...], str], Tensor] = {}
        self.last_model_seconds = 0.0
        self._input_size: torch.Size | None = None  # of the last network call
        self._timing: tuple[torch.cuda.Event, torch.cuda.Event] | None = None

    # -- public API -------------------------------------------------------------------------

    def backend_text(self) -> str:
        """The backend it runs and, when ``auto`` chose it, why."""
        chosen = f" ({self.backend_reason})" if self.backend_reason != "requested" else ""
        return f"{self.backend}{chosen}"

    def describe(self) -> str:
        """One line for logs and reports: network, backend (and why, when chosen by auto),
        device, the precision it runs at and why, and the instruction set (``gifnet, torch on
        cpu, bf16 (auto: the CPU computes bf16 natively ...); instruction set AMX``)."""
        where = f"{self.backend_text()} on {self.device}"
        precision = f"{self.precision} ({self.precision_reason})"
        return f"{self.network}, {where}, {precision}; instruction set {self.instruction_set}"

    def default_batch(self) -> int:
        """Pairs of one size per network call when the user names no batch: 8 on CUDA, which a
        batch keeps busy, 1 on the CPU, where a batch gains nothing and only holds more memory."""
        return 8 if self.device.type == "cuda" else 1

    def fuse(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Fuse two images: uint8 H×W×3 RGB when the mode's chroma source is colour, else H×W.

        `first` is the thermal/NIR/PET/near-focus image (uint8, or grey uint16 /
        float thermal, normalised by the engine's thermal rule), `second` the
        visible image; colour arrays are H×W×3 in RGB order. Different sizes
        are a ValueError naming both.
        """
        return self.fuse_batch([(first, second)])[0]

    def fuse_batch(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """fuse() for several pairs of one size in one network call: the same images as one
        fuse() per pair (each sample is fused on its own inside the network), with one upload,
        one launch sequence and one download per batch, which is what keeps a GPU busy."""
        return [
            luminance if colour is None else colour
            for luminance, colour in self.fuse_luminance_batch(pairs)
        ]

    def fuse_luminance(
        self, first: np.ndarray, second: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Like fuse(), but return (fused luminance H×W uint8, colour result or None)."""
        return self.fuse_luminance_batch([(first, second)])[0]

    def fuse_luminance_batch(
        self, pairs: Sequence[tuple[np.ndarray, np.ndarray]]
    ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """fuse_luminance() for several pairs of one size (see fuse_batch)."""
        self._check_choices()
        if not pairs:
            return []
        use1, use2 = _CHROMA_SOURCES[self.mode]
        prepared = [
            (self._prepare(first, "first", use1), self._prepare(second, "second", use2))
            for first, second in pairs
        ]
        for first, second in prepared:
            if first.shape[:2] != second.shape[:2]:
                raise ValueError(
                    f"image sizes differ: first is {_size(first)}, second is {_size(second)} "
                    "(align the thermal image to the RGB image first)"
                )
            if first.shape[:2] != prepared[0][0].shape[:2]:
                raise ValueError(
                    f"a batch holds pairs of one size: {_size(first)} after "
                    f"{_size(prepared[0][0])} (fuse them in separate batches)"
                )
        if min(prepared[0][0].shape[:2]) < MIN_SIZE:
            network = "GIFNet" if self.network == "gifnet" else "TIM"
            what = "the classical rule" if self._classic else network
            raise ValueError(
                f"images of {_size(prepared[0][0])} are too small: {what} (backend "
                f"{self.backend}) needs at least {MIN_SIZE}x{MIN_SIZE}"
            )
        with torch.inference_mode():
            firsts = [
                self._luma_chroma(self._upload(a, f"first{k}")) for k, (a, _) in enumerate(prepared)
            ]
            seconds = [
                self._luma_chroma(self._upload(b, f"second{k}"))
                for k, (_, b) in enumerate(prepared)
            ]
            fused = self._run_model(
                torch.cat([y for y, _ in firsts]), torch.cat([y for y, _ in seconds])
            )
            results = []
            for k, ((_, c1), (_, c2)) in enumerate(zip(firsts, seconds, strict=True)):
                chroma = self._mix_chroma(c1 if use1 else None, c2 if use2 else None)
                colour = None if chroma is None else self._to_rgb(fused[k], chroma)
                results.append((torch.round(fused[k]).to(torch.uint8), colour))
            # The only device→host copies of a fusion; they synchronise once.
            out = [
                (luminance.cpu().numpy(), None if colour is None else colour.cpu().numpy())
                for luminance, colour in results
            ]
        if self._timing is not None:
            start, end = self._timing
            self.last_model_seconds = start.elapsed_time(end) / 1000.0
        return out

    # -- steps ---------------------------------------------------------------------------------

    def _check_choices(self) -> None:
        """Mode and chroma rule are settable attributes: checked at construction and per pair."""
        if self.mode not in MODES:
            raise ValueError(f"unknown fusion mode {self.mode!r} (expected one of {MODES})")
        if self.chroma_rule not in CHROMA_RULES:
            raise ValueError(f"unknown chroma rule {self.chroma_rule!r} (expected {CHROMA_RULES})")
        if self.network != "gifnet" and self.mode not in TIM_MODES:
            raise ValueError(
                f"network {self.network!r} has weights for infrared/visible fusion only (modes "
                f"{', '.join(TIM_MODES)}), not mode {self.mode!r}; use network 'gifnet'"
            )

    def _prepare(self, image: np.ndarray, which: str, chroma_source: bool) -> np.ndarray:
        """Check shape and dtype; bring grey 16-bit/float images to uint8 by the thermal rule.

        A grey picture stored as colour (R = G = B, as many thermal cameras and
        the RoadScene infrared JPEGs deliver it) whose chroma is not used is
        taken as grey: truncating its float Y would lower 13 of the 256 grey
        levels by one.
        """
        if not isinstance(image, np.ndarray):
            raise TypeError(f"{which} image must be a numpy array, got {type(image).__name__}")
        if image.ndim == 3 and (
            image.shape[2] == 1
            or (
                not chroma_source
                and image.shape[2] == 3
                and image.dtype == np.uint8
                and np.array_equal(image[:, :, 0], image[:, :, 1])
                and np.array_equal(image[:, :, 0], image[:, :, 2])
            )
        ):
            image = image[:, :, 0]
        if image.ndim == 2:
            return normalize_thermal(
                image, self.thermal_norm, self.thermal_percentiles, self.thermal_range
            )
        if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
            return image
        raise ValueError(
            f"{which} image has shape {image.shape} and dtype {image.dtype}: expected grey H×W "
            "(uint8, uint16 or float) or colour H×W×3 uint8"
        )

    def _upload(self, image: np.ndarray, slot: str) -> Tensor:
        """The image as a tensor on the device. To CUDA through a pinned buffer kept per
        input and size (allocating pinned memory is slow) with an asynchronous copy; reusing
        the buffer is safe because every fusion ends with a synchronising download."""
        tensor = torch.from_numpy(np.ascontiguousarray(image))
        if self.device.type != "cuda":
            return tensor
        key = (slot, tuple(image.shape), image.dtype.str)
        pinned = self._pinned.get(key)
        if pinned is None:
            if len(self._pinned) >= _PINNED_BUFFERS:
                self._pinned.clear()
            pinned = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            self._pinned[key] = pinned
        pinned.copy_(tensor)
        return pinned.to(self.device, non_blocking=True)

    def _luma_chroma(self, image: Tensor) -> tuple[Tensor, Tensor | None]:
        """uint8 H×W or H×W×3 → network input Y (1×1×H×W in [0, 1]) and chroma (2×H×W) or None."""
        if image.dim() == 2:
            return (image.float() / 255.0)[None, None], None
        ycbcr = torch.einsum("hwc,kc->khw", image.float(), self._rgb_to_ycbcr)
        # The authors truncate Y to uint8 before it becomes a network input.
        y = torch.floor(ycbcr[0].clamp(0.0, 255.0)) / 255.0
        return y[None, None], ycbcr[1:]

    def run_model(self, first: Tensor, second: Tensor) -> Tensor:
        """The network alone, with the engine's backend and precision: N×1×H×W float inputs
        in [0, 1] on the engine's device → fused luminance N×1×H×W in [0, 1] (float32). For
        benchmarks and for callers that prepare the network inputs themselves."""
        if self._graphs:  # a new CUDA-graph step: the previous output may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        if first.shape[-2:] != self._input_size:
            if self._input_size is not None and first.device.type == "cpu":
                release_freed_memory()  # the memory kept for the old size (allocator.py)
            self._input_size = first.shape[-2:]
        with (
            torch.inference_mode(),
            torch.autocast(
                self.device.type,
                dtype=self._autocast or torch.float32,
                enabled=self._autocast is not None,
            ),
        ):
            # TIM's output is unclamped (GIFNet's is in [0, 1] already: unchanged by this).
            out = self._network(first, second).float().clamp(0.0, 1.0)
        return out.clone() if self._graphs else out

    def _classic_batch(self, first: Tensor, second: Tensor) -> Tensor:
        """run_model's network for a classic backend: the rule per sample, in [0, 1]."""
        return _classic_luminance(self._classic, first, second)[:, None] / 255.0

    def inference_size(self, height: int, width: int) -> tuple[int, int]:
        """The size the network runs at under max_pixels / inference_scale (≥ 8×8)."""
        if not 0.0 < self.inference_scale <= 1.0:
            raise ValueError(f"inference_scale must be in (0, 1], got {self.inference_scale}")
        if self.max_pixels is not None and self.max_pixels < 64:
            raise ValueError(f"max_pixels must be at least 64 (8x8), got {self.max_pixels}")
        if self.restore not in RESTORE_RULES:
            raise ValueError(f"unknown restore rule {self.restore!r} (expected {RESTORE_RULES})")
        scale = self.inference_scale
        if self.max_pixels is not None:
            scale = min(scale, math.sqrt(self.max_pixels / (height * width)))
        if scale >= 1.0:
            return height, width
        return max(8, math.floor(height * scale)), max(8, math.floor(width * scale))

    def _infer(self, first: Tensor, second: Tensor) -> Tensor:
        """run_model at the target size, brought back to the input size (N×1×H×W in [0, 1])."""
        height, width = first.shape[-2:]
        size = self.inference_size(height, width)
        if size == (height, width):
            return self.run_model(first, second)
        small = [F.interpolate(y, size, mode="area") for y in (first, second)]
        fused = _upsample(self.run_model(*small), (height, width))
        if self.restore == "detail":
            # Add back the detail both reduced inputs lack: GIFNet passes the fine detail of
            # both inputs through with gains near one (benchmarks/resolution_quality.py), so
            # the sum beats picking the stronger one per pixel.
            for full_size, reduced in zip((first, second), small, strict=True):
                fused = fused + (full_size - _upsample(reduced, (height, width)))
        return fused.clamp(0.0, 1.0)

    def _run_model(self, first: Tensor, second: Tensor) -> Tensor:
        """The network forward on N×1×H×W inputs, timed; returns the fused luminance on 0-255
        (float32, N×H×W)."""
        on_cuda = self.device.type == "cuda"
        if on_cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        else:
            began = time.perf_counter()
        if self._classic is not None:
            # Full size and straight on 0-255: a rule takes milliseconds, and a round trip
            # through [0, 1] could move a halfway value (the average's x.5) across a rounding.
            fused = _classic_luminance(self._classic, first, second)
        else:
            fused = self._infer(first, second)[:, 0].float() * 255.0
        if on_cuda:
            end.record()
            self._timing = (start, end)  # read after the download has synchronised
        else:
            self._timing = None
            self.last_model_seconds = time.perf_counter() - began
        return fused

    def _mix_chroma(self, first: Tensor | None, second: Tensor | None) -> Tensor | None:
        if first is None or second is None:
            return first if second is None else second
        centre = 128.0 if self.chroma_rule == "authors" else 0.0
        w1, w2 = (first - centre).abs(), (second - centre).abs()
        total = w1 + w2
        mixed = (first * w1 + second * w2) / total.clamp_min(1e-12)
        return torch.where(total > 0, mixed, torch.full_like(mixed, centre))

    def _to_rgb(self, luminance: Tensor, chroma: Tensor) -> Tensor:
        rgb = luminance[None] + torch.einsum("kc,chw->khw", self._cbcr_to_rgb, chroma)
        return torch.round(rgb.clamp(0.0, 255.0)).to(torch.uint8).permute(1, 2, 0).contiguous()
