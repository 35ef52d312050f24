"""The fusion node's parameters: one table of specs and their descriptors.

Every parameter is declared from :data:`PARAMETERS` with a ``ParameterDescriptor`` (type from
the default, description, constraints, ranges, read-only); every value then goes through
gifnet_ros.ros.settings.validate, which accepts a whole set of changes or rejects it with one
reason. The node module only wires this to rclpy; ``config/fusion.yaml`` and the launch files
expose the same names.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from gifnet_ros.fusion.align import IDENTITY, NO_CROP
from gifnet_ros.fusion.align import METHODS as ALIGN_METHODS
from gifnet_ros.fusion.engine import (
    BACKENDS,
    NETWORKS,
    PRECISIONS,
    RESTORE_RULES,
    FusionEngine,
)
from gifnet_ros.fusion.freeze import FREEZE_ACTIONS
from gifnet_ros.fusion.thermal import DEFAULT_TIME_CONSTANT
from gifnet_ros.fusion.thermal import RULES as THERMAL_RULES
from gifnet_ros.models.onnx import PROVIDERS

OUTPUT_ENCODINGS = ("rgb8", "bgr8", "mono8")
COMPRESSED_FORMATS = ("", "jpeg", "png")
TRANSPORTS = ("", "raw", "compressed")
SYNC_BACKENDS = ("auto", "message_filters", "builtin")
ENGINE_KEYS = (
    "network",
    "weights",
    "tim_weights",
    "device",
    "precision",
    "backend",
    "onnx_model",
    "onnx_providers",
    "threads",
    "compile",
)
"""Parameters that need a new engine (a reload); an engine key maps each to its value."""


class StartupError(RuntimeError):
    """A configuration that cannot run; the message is one line for the log."""


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: default (which fixes its type), documentation and constraints."""

    name: str
    default: Any
    description: str
    constraints: str = ""
    read_only: bool = False
    float_range: tuple[float, float] | None = None
    int_range: tuple[int, int] | None = None

    def descriptor(self) -> ParameterDescriptor:
        descriptor = ParameterDescriptor(
            name=self.name,
            description=self.description,
            additional_constraints=self.constraints,
            read_only=self.read_only,
        )
        if self.float_range is not None:
            low, high = self.float_range
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=low, to_value=high, step=0.0)
            ]
        if self.int_range is not None:
            low, high = self.int_range
            descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=1)]
        return descriptor


def one_of(choices: Sequence[str]) -> str:
    """``one of: a, b, ''`` for a descriptor's constraints and a rejection reason."""
    return "one of: " + ", ".join(repr(c) if c == "" else c for c in choices)


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "heads",
        [""],
        "Camera heads this node fuses with one model: a name per thermal/RGB pair, each in its "
        "own namespace (front: front/thermal/image, front/rgb/image -> front/fused/image) with "
        "its own parameters front.align.*, front.thermal.*, front.sync.thermal_offset (defaults: "
        "the node-level values). [''] is one head in the node's own namespace.",
        "[''] or distinct names of letters, digits and _ (not starting with a digit)",
        read_only=True,
    ),
    ParamSpec(
        "mode",
        "thermal_rgb",
        "Fusion task of the network; takes effect on the next pair.",
        one_of(FusionEngine.MODES),
    ),
    ParamSpec(
        "network",
        "gifnet",
        "Fusion network: gifnet; or TIM (Liu et al., TPAMI 2024) as tim (its two-stage "
        "infrared/visible pipeline) or tim_light, with weights this project trained, NOT the "
        "authors' (theirs go in tim_weights). TIM fuses in modes thermal_rgb and grey, on the "
        "torch or onnxruntime backend. Changing it reloads the model.",
        one_of(NETWORKS),
    ),
    ParamSpec(
        "backend",
        "auto",
        "Inference backend: auto (torch; TIM on x86 CPUs without native bf16: onnxruntime, as "
        "fast there in less memory); torch; onnxruntime (an exported graph: "
        "exported on first use and cached, or onnx_model); or a classical rule that needs no "
        "weights (classic_average, classic_max, classic_laplacian, classic_gff; CPU, fp32, full "
        "size). Changing it reloads the model.",
        one_of(BACKENDS),
    ),
    ParamSpec(
        "onnx_model",
        "",
        "ONNX file for backend onnxruntime (written by gifnet-export); empty: the cached "
        "export of the checkpoint. Changing it reloads the model.",
        "an existing .onnx file, or empty",
    ),
    ParamSpec(
        "onnx_providers",
        "",
        "ONNX Runtime execution providers in order of preference, comma-separated (cpu, cuda, "
        "tensorrt); empty: cuda,cpu on a CUDA device, else cpu. Changing it reloads the model.",
        "comma-separated names out of " + ", ".join(PROVIDERS),
    ),
    ParamSpec(
        "device",
        "auto",
        "Torch device; 'auto' picks cuda when available. Changing it "
        "reloads the model in the background.",
        "auto, cpu, cuda or cuda:N",
    ),
    ParamSpec(
        "precision",
        "auto",
        "Inference precision. auto: what the hardware does fast (bf16 on CPUs with native "
        "bf16, fp16 on CUDA GPUs with tensor cores, else fp32); the choice and its reason are "
        "logged when the model loads and shown in /diagnostics. fp32 is the exact mode. "
        "Changing it reloads the model.",
        one_of(PRECISIONS),
    ),
    ParamSpec(
        "weights",
        "",
        "Checkpoint path; empty: $GIFNET_WEIGHTS, then the gifnet-weights "
        "cache. Changing it reloads the model.",
        "an existing file, or empty",
    ),
    ParamSpec(
        "tim_weights",
        "",
        "TIM's weights for network tim/tim_light; empty: the ones this project trained "
        "(shipped with the package). The authors' files: 'model_1.pt,model_2.pt' for tim, one "
        "file for tim_light. Changing it reloads the model.",
        "existing files, comma-separated, or empty",
    ),
    ParamSpec(
        "threads",
        0,
        "CPU threads for inference (torch and onnxruntime); 0: the library's default. "
        "Changing it reloads the model.",
        int_range=(0, 1024),
    ),
    ParamSpec(
        "compile",
        False,
        "torch.compile the network (torch backend only; compiled once per image size, CUDA "
        "graphs on CUDA). Changing it reloads the model.",
    ),
    ParamSpec(
        "max_pixels",
        0,
        "Fuse the luminance at most at this many pixels and restore full size (CPU-only "
        "robots); 0: no limit. Takes effect on the next pair.",
        "0, or at least 64 (8x8)",
        int_range=(0, 1 << 30),
    ),
    ParamSpec(
        "inference_scale",
        1.0,
        "Fuse at this fraction of the image side and restore full size; 1: full size. "
        "Takes effect on the next pair.",
        "0 < scale <= 1",
        float_range=(0.0, 1.0),
    ),
    ParamSpec(
        "restore",
        "detail",
        "How a reduced-size fusion returns to full size: detail (upsample and add back the "
        "inputs' fine detail) or bilinear (upsample only).",
        one_of(RESTORE_RULES),
    ),
    ParamSpec(
        "thermal.normalization",
        "percentile",
        "How a 16-bit or float thermal image is "
        "mapped to 8 bits (8-bit images are used as they are).",
        one_of(THERMAL_RULES),
    ),
    ParamSpec(
        "thermal.percentiles",
        [1.0, 99.0],
        "Low and high percentile of the per-frame stretch for normalization 'percentile'.",
        "[low, high], 0 <= low < high <= 100",
    ),
    ParamSpec(
        "thermal.range",
        [0.0, 65535.0],
        "Input values mapped to 0 and 255 for "
        "normalization 'fixed' (raw counts, kelvin or degrees, as the camera sends).",
        "[min, max], finite, max > min",
    ),
    ParamSpec(
        "thermal.time_constant",
        DEFAULT_TIME_CONSTANT,
        "Seconds over which the percentile stretch of 16-bit/float thermal follows the scene "
        "(exponential, by the images' stamps), so that a hot object entering or leaving does "
        "not make the whole image pump in brightness; 0: each frame stretched on its own.",
        ">= 0",
        float_range=(0.0, 60.0),
    ),
    ParamSpec(
        "thermal.freeze_action",
        "skip",
        "What to do while the thermal camera is frozen (shutter / flat-field correction: the "
        "same image again, or no new image for thermal.freeze_timeout while RGB goes on): "
        "skip those pairs (no ghosting of moving objects), hold (fuse with the last thermal "
        "image while it is at most thermal.freeze_max_age old), or ignore (fuse as received). "
        "Pauses are counted in /diagnostics and logged once each.",
        one_of(FREEZE_ACTIONS),
    ),
    ParamSpec(
        "thermal.freeze_max_age",
        3.0,
        "freeze_action hold: the oldest thermal image (s, by stamps) fused with a newer RGB "
        "one; older than that, pairs are skipped.",
        "> 0",
        float_range=(0.0, 3600.0),
    ),
    ParamSpec(
        "thermal.freeze_timeout",
        0.5,
        "Seconds (by stamps) without a new thermal image while RGB images arrive before the "
        "thermal stream counts as paused.",
        "> 0",
        float_range=(0.0, 3600.0),
    ),
    ParamSpec(
        "align.method",
        "resize",
        "How the thermal image is put on the RGB pixel grid: "
        "resize to the RGB size, warp by align.homography, or none (sizes must match).",
        one_of(ALIGN_METHODS),
    ),
    ParamSpec(
        "align.homography",
        list(IDENTITY),
        "3x3 matrix, row-major, mapping (cropped) "
        "thermal pixel coordinates to RGB pixel coordinates; used by align.method "
        "homography.",
        "9 finite numbers, non-singular",
    ),
    ParamSpec(
        "align.crop",
        list(NO_CROP),
        "Region [x, y, w, h] cut from the thermal image before alignment; [0, 0, 0, 0] = no crop.",
        "4 integers >= 0, w and h both > 0 or both 0",
    ),
    ParamSpec(
        "fallback_to_cpu",
        True,
        "When the model raises a RuntimeError (CUDA out of memory, a lost device) on an "
        "accelerator, load it on the CPU and keep fusing there (slower, but the node stays "
        "useful); the pair that failed is skipped either way.",
    ),
    ParamSpec(
        "output_encoding",
        "rgb8",
        "Encoding of fused/image; mono8 publishes the fused luminance.",
        one_of(OUTPUT_ENCODINGS),
    ),
    ParamSpec(
        "publish_compressed",
        "",
        "Also publish fused/image/compressed (sensor_msgs/CompressedImage, image_transport's "
        "compressed topic name) as jpeg or png; empty: not published.",
        one_of(COMPRESSED_FORMATS),
    ),
    ParamSpec(
        "jpeg_quality",
        95,
        "JPEG quality of fused/image/compressed (publish_compressed jpeg).",
        int_range=(1, 100),
    ),
    ParamSpec(
        "publish_luminance",
        False,
        "Also publish the fused luminance (mono8) on fused/luminance.",
    ),
    ParamSpec(
        "max_age",
        0.0,
        "Drop a pair whose RGB stamp is more than this many seconds older "
        "than the node clock when the worker takes it; 0 disables.",
        float_range=(0.0, 3600.0),
    ),
    ParamSpec(
        "sync.slop",
        0.05,
        "Largest stamp difference (s) between a thermal and an RGB image that are fused together.",
        "> 0",
        float_range=(0.0, 60.0),
    ),
    ParamSpec(
        "sync.thermal_offset",
        0.0,
        "Seconds added to every thermal stamp before pairing: a driver that stamps on host "
        "receipt lags; gifnet-sync-offset BAG estimates the value from a recording. The fused "
        "image keeps the RGB header.",
        "-60 <= offset <= 60",
        float_range=(-60.0, 60.0),
    ),
    ParamSpec(
        "sync.queue_size",
        10,
        "Messages per input the synchronizer keeps while looking for partners.",
        int_range=(1, 1000),
    ),
    ParamSpec(
        "sync.backend",
        "auto",
        "Pairing implementation: message_filters' "
        "ApproximateTimeSynchronizer, the package's StampPairer ('builtin'), or 'auto' "
        "(message_filters when importable).",
        one_of(SYNC_BACKENDS),
        read_only=True,
    ),
    ParamSpec(
        "compressed",
        False,
        "Subscribe to sensor_msgs/CompressedImage on "
        "<topic>/compressed (image_transport naming) for both inputs.",
        read_only=True,
    ),
    ParamSpec(
        "thermal_transport",
        "",
        "Per-input override of 'compressed' for the thermal input.",
        one_of(TRANSPORTS),
        read_only=True,
    ),
    ParamSpec(
        "rgb_transport",
        "",
        "Per-input override of 'compressed' for the RGB input.",
        one_of(TRANSPORTS),
        read_only=True,
    ),
    ParamSpec(
        "qos_depth",
        5,
        "History depth of the sensor-data (best effort) subscriptions and of the publishers. "
        "Any other QoS policy of an input or output is set with the standard overrides, e.g. "
        "qos_overrides./fused/image.publisher.durability: transient_local.",
        read_only=True,
        int_range=(1, 1000),
    ),
    ParamSpec(
        "diagnostics_period",
        1.0,
        "Seconds between two DiagnosticArray messages on /diagnostics (rates, counters, "
        "latency); the log only says when inputs start, stop or begin to be dropped.",
        "> 0",
        float_range=(0.0, 3600.0),
    ),
)
SPECS = {spec.name: spec for spec in PARAMETERS}
HEAD_PARAMETERS = (
    "sync.thermal_offset",
    "thermal.normalization",
    "thermal.percentiles",
    "thermal.range",
    "thermal.time_constant",
    "align.method",
    "align.homography",
    "align.crop",
)
"""What each camera head sets for itself: its clock, its thermal camera and its alignment."""


def head_name(head: str, name: str) -> str:
    """The parameter ``name`` of ``head``: ``front.align.method``; the node's own for ''."""
    return f"{head}.{name}" if head else name


def head_specs(heads: Sequence[str]) -> dict[str, ParamSpec]:
    """The per-head parameters of named heads, each described as its node-level original."""
    return {
        head_name(head, name): replace(SPECS[name], name=head_name(head, name))
        for head in heads
        if head
        for name in HEAD_PARAMETERS
    }


def help_table() -> str:
    """Every parameter with its default and description, for ``fusion_node --help``."""
    return "\n".join(
        f"  {s.name} = {s.default!r}{' (read-only)' if s.read_only else ''}\n"
        + textwrap.fill(s.description, width=88, initial_indent=" " * 6, subsequent_indent=" " * 6)
        for s in PARAMETERS
    )
