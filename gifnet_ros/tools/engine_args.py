"""The fusion engine's options as command-line flags, shared by the command-line tools.

gifnet-fuse, gifnet-fuse-bag and gifnet-eval build a FusionEngine from the same flags, so a
user learns them once and a new engine option reaches every tool by one edit here. The
thermal flags (``--thermal-norm`` and its range and percentiles) are separate because the bag
tool applies them itself, before alignment, as the node does.
"""

from __future__ import annotations

import argparse

from gifnet_ros.fusion.engine import BACKENDS, NETWORKS, PRECISIONS, RESTORE_RULES
from gifnet_ros.fusion.options import EngineOptions
from gifnet_ros.fusion.thermal import RULES as THERMAL_RULES
from gifnet_ros.models.onnx import split_providers
from gifnet_ros.tools.arg_types import positive_int


def _providers(text: str) -> list[str]:
    names = split_providers(text)
    if not names:
        raise argparse.ArgumentTypeError("--providers needs at least one name")
    return names


def add_engine_arguments(
    parser: argparse.ArgumentParser, backends: tuple[str, ...] = BACKENDS, batch: bool = True
) -> None:
    """Add the engine flags (backend, device, precision, weights, speed options) to ``parser``;
    ``--batch`` only for tools that fuse through FusionEngine.fuse_batch."""
    group = parser.add_argument_group("fusion engine")
    group.add_argument(
        "--backend",
        choices=backends,
        default="auto",
        help="auto (default: torch; TIM on x86 CPUs without native bf16: onnxruntime; see "
        "gifnet_ros.fusion.precision), torch, onnxruntime (an exported graph), or a classical rule "
        "that needs no weights (classic_*)",
    )
    group.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    group.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto (default: bf16 on CPUs with native bf16, fp16 on CUDA GPUs with tensor "
        "cores, else fp32; see gifnet_ros.fusion.precision), or fp32 (exact), bf16, fp16 (CUDA)",
    )
    if batch:
        group.add_argument(
            "--batch",
            type=positive_int,
            help="pairs of one size fused per network call (default: 8 on CUDA, 1 on the CPU, "
            "where a batch gains nothing and only holds more memory)",
        )
    group.add_argument(
        "--network",
        choices=NETWORKS,
        default="gifnet",
        help="gifnet (default), or TIM: tim (two stages) or tim_light; TIM fuses thermal/RGB "
        "only, with this project's weights unless --weights",
    )
    group.add_argument(
        "--weights",
        help="checkpoint (GIFNet default: $GIFNET_WEIGHTS, then the gifnet-weights cache; TIM "
        "default: the weights gifnet_ros trained, not the authors'; the authors' tim pair as "
        "MODEL_1.pt,MODEL_2.pt)",
    )
    group.add_argument(
        "--onnx-model",
        help="ONNX file for --backend onnxruntime, exported from --network (default: the "
        "network's cached export of its weights, written on first use)",
    )
    group.add_argument(
        "--providers",
        type=_providers,
        metavar="LIST",
        help="ONNX Runtime providers in order of preference, comma-separated: cpu, cuda, "
        "tensorrt (default: cuda,cpu on a CUDA device, else cpu)",
    )
    group.add_argument(
        "--threads", type=int, help="CPU threads for inference (default: PyTorch's choice)"
    )
    group.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network (torch backend; compiled once per image size)",
    )
    group.add_argument(
        "--max-pixels",
        type=int,
        help="fuse at most this many pixels and restore full size (CPU-only robots)",
    )
    group.add_argument(
        "--inference-scale",
        type=float,
        default=1.0,
        help="fuse at this fraction of the size, in (0, 1], and restore full size (default 1)",
    )
    group.add_argument(
        "--restore",
        choices=RESTORE_RULES,
        default="detail",
        help="how a reduced-size fusion returns to full size (default %(default)s)",
    )


ENGINE_FLAGS = (
    "weights",
    "network",
    "backend",
    "device",
    "precision",
    "onnx_model",
    "providers",
    "threads",
    "compile",
    "max_pixels",
    "inference_scale",
    "restore",
)
"""The EngineOptions fields add_engine_arguments has a flag for; each flag's dest is the
field's name (``--onnx-model`` -> ``onnx_model``)."""


def engine_options(args: argparse.Namespace) -> EngineOptions:
    """The engine options the flags of add_engine_arguments give; the fields those flags do
    not cover (mode, thermal rule, chroma rule) keep their defaults for the tool to set."""
    return EngineOptions(**{name: getattr(args, name) for name in ENGINE_FLAGS})


def add_thermal_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the 16-bit/float thermal normalisation flags (gifnet_ros.fusion.thermal's rules)."""
    group = parser.add_argument_group("thermal normalisation (16-bit or float thermal images)")
    group.add_argument(
        "--thermal-norm",
        choices=THERMAL_RULES,
        default="percentile",
        help="per-frame percentile stretch (default) or a fixed range, to 8 bits",
    )
    group.add_argument(
        "--thermal-percentiles",
        type=float,
        nargs=2,
        default=(1.0, 99.0),
        metavar=("LOW", "HIGH"),
        help="percentiles for --thermal-norm percentile (default 1 99)",
    )
    group.add_argument(
        "--thermal-range",
        type=float,
        nargs=2,
        default=(0.0, 65535.0),
        metavar=("MIN", "MAX"),
        help="input values mapped to 0 and 255 for --thermal-norm fixed",
    )
