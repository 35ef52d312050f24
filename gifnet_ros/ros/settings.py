"""From the fusion node's parameter values to the settings its pairs are fused with.

Every value, whether from a params file, the command line or ``ros2 param set``, goes through
:func:`validate`, which either accepts a whole set of changes, with the :class:`Settings` the
worker then fuses with, or rejects it with one reason. The checks here are those beyond what a
parameter's descriptor (gifnet_ros.ros.params) already enforces: choices, files that must
exist, pairs of numbers, and the engine's own rules for backend, device and precision.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gifnet_ros.fusion.align import Alignment
from gifnet_ros.fusion.engine import (
    BACKENDS,
    NETWORKS,
    PRECISIONS,
    RESTORE_RULES,
    TIM_MODES,
    FusionEngine,
    check_options,
)
from gifnet_ros.fusion.freeze import FREEZE_ACTIONS
from gifnet_ros.fusion.thermal import RULES as THERMAL_RULES
from gifnet_ros.models.onnx import PROVIDERS, split_providers
from gifnet_ros.models.tim import weight_files
from gifnet_ros.models.weights import WeightsError, resolve_weights
from gifnet_ros.ros.params import (
    COMPRESSED_FORMATS,
    HEAD_PARAMETERS,
    OUTPUT_ENCODINGS,
    SYNC_BACKENDS,
    TRANSPORTS,
    head_name,
    one_of,
)


def check_heads(heads: Sequence[str]) -> str | None:
    """The reason a ``heads`` value cannot be used, if any."""
    if list(heads) == [""]:
        return None
    if not heads:
        return "heads is empty: [''] is one head in the node's namespace"
    for head in heads:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", head):
            return (
                f"heads: {head!r} is not a name of letters, digits and _ not starting with a "
                "digit ('' stands alone, for one head in the node's namespace)"
            )
    if len(set(heads)) != len(heads):
        return f"heads {list(heads)} names a head twice"
    return None


def needs_weights(values: dict[str, Any]) -> bool:
    """Whether the engine these parameter values ask for loads the checkpoint: not for a
    classical rule, nor for onnxruntime with its own ONNX file."""
    backend = values["backend"]
    if values["network"] != "gifnet":
        return False  # TIM: the project's weights ship with the package, or its own files
    return backend in ("auto", "torch") or (backend == "onnxruntime" and not values["onnx_model"])


def _check_tim_weights(value: str) -> str | None:
    missing = [part for part in weight_files(value) if not Path(part).is_file()]
    return f"tim_weights: {missing[0]} is not a file" if missing else None


def check_weights(value: str) -> str | None:
    """The reason the checkpoint ``value`` (empty: the default lookup) cannot be used, if any."""
    try:
        resolve_weights(value or None)
    except WeightsError as exc:
        return f"weights: {exc}"
    return None


def _check_providers(value: str) -> str | None:
    unknown = [name for name in split_providers(value) if name not in PROVIDERS]
    if unknown:
        return f"onnx_providers: unknown {', '.join(unknown)} (known: {', '.join(PROVIDERS)})"
    return None


def _check_onnx_model(value: str) -> str | None:
    if value and not os.path.isfile(value):
        return f"onnx_model: {value} is not a file (write one with gifnet-export)"
    return None


def _check_max_pixels(value: int) -> str | None:
    return None if value == 0 or value >= 64 else f"max_pixels must be 0 or >= 64, got {value}"


def _check_pair(name: str, values: Sequence[float], low: float, high: float) -> str | None:
    if len(values) != 2 or not all(math.isfinite(v) for v in values):
        return f"{name} needs 2 finite numbers, got {list(values)}"
    if not low <= values[0] < values[1] <= high:
        return f"{name} {list(values)} must satisfy {low} <= first < second <= {high}"
    return None


def _choice(name: str, choices: Sequence[str]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"{name} {value!r} is not {one_of(choices)}"

    return check


def _positive(name: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value > 0 else f"{name} must be > 0, got {value}"

    return check


_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "mode": _choice("mode", FusionEngine.MODES),
    "precision": _choice("precision", PRECISIONS),
    "network": _choice("network", NETWORKS),
    "tim_weights": _check_tim_weights,
    "backend": _choice("backend", BACKENDS),
    "onnx_model": _check_onnx_model,
    "onnx_providers": _check_providers,
    "max_pixels": _check_max_pixels,
    "inference_scale": _positive("inference_scale"),
    "restore": _choice("restore", RESTORE_RULES),
    "thermal.normalization": _choice("thermal.normalization", THERMAL_RULES),
    "thermal.percentiles": lambda v: _check_pair("thermal.percentiles", v, 0.0, 100.0),
    "thermal.range": lambda v: _check_pair("thermal.range", v, -math.inf, math.inf),
    "output_encoding": _choice("output_encoding", OUTPUT_ENCODINGS),
    "publish_compressed": _choice("publish_compressed", COMPRESSED_FORMATS),
    "thermal.freeze_action": _choice("thermal.freeze_action", FREEZE_ACTIONS),
    "thermal.freeze_max_age": _positive("thermal.freeze_max_age"),
    "thermal.freeze_timeout": _positive("thermal.freeze_timeout"),
    "heads": check_heads,
    "sync.slop": _positive("sync.slop"),
    "sync.backend": _choice("sync.backend", SYNC_BACKENDS),
    "thermal_transport": _choice("thermal_transport", TRANSPORTS),
    "rgb_transport": _choice("rgb_transport", TRANSPORTS),
    "diagnostics_period": _positive("diagnostics_period"),
}
"""Per-parameter checks beyond the descriptor's type and range; return the rejection reason."""


@dataclass(frozen=True)
class HeadSettings:
    """What one camera head's pairs are fused with: its clock offset, thermal rule, alignment."""

    thermal_offset_ns: int
    thermal_rule: str
    percentiles: tuple[float, float]
    value_range: tuple[float, float]
    time_constant: float
    alignment: Alignment

    @classmethod
    def from_values(cls, values: dict[str, Any], head: str) -> HeadSettings:
        def value(name: str) -> Any:  # the node-level value until the head's is declared
            return values.get(head_name(head, name), values[name])

        try:
            alignment = Alignment.create(
                value("align.method"), value("align.homography"), value("align.crop")
            )
        except ValueError as exc:
            raise ValueError(f"head {head}: {exc}" if head else str(exc)) from None
        return cls(
            thermal_offset_ns=round(value("sync.thermal_offset") * 1e9),
            thermal_rule=value("thermal.normalization"),
            percentiles=tuple(value("thermal.percentiles")),
            value_range=tuple(value("thermal.range")),
            time_constant=value("thermal.time_constant"),
            alignment=alignment,
        )


@dataclass(frozen=True)
class Settings:
    """What the worker needs per pair; replaced as a whole, so a pair never sees a mix."""

    mode: str
    heads: dict[str, HeadSettings]
    output_encoding: str
    publish_luminance: bool
    publish_compressed: str
    jpeg_quality: int
    max_age: float
    max_pixels: int | None
    inference_scale: float
    restore: str
    freeze_action: str
    freeze_max_age_ns: int
    freeze_timeout_ns: int

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> Settings:
        return cls(
            mode=values["mode"],
            heads={head: HeadSettings.from_values(values, head) for head in values["heads"]},
            output_encoding=values["output_encoding"],
            publish_luminance=values["publish_luminance"],
            publish_compressed=values["publish_compressed"],
            jpeg_quality=values["jpeg_quality"],
            max_age=values["max_age"],
            max_pixels=values["max_pixels"] or None,
            inference_scale=values["inference_scale"],
            restore=values["restore"],
            freeze_action=values["thermal.freeze_action"],
            freeze_max_age_ns=round(values["thermal.freeze_max_age"] * 1e9),
            freeze_timeout_ns=round(values["thermal.freeze_timeout"] * 1e9),
        )


def _base_name(name: str) -> str:
    """The node-level parameter a per-head one (``front.align.method``) stands for."""
    rest = name.partition(".")[2]  # node-level names have one dot at most: never a match
    return rest if rest in HEAD_PARAMETERS else name


@dataclass(frozen=True)
class Accepted:
    """A set of changes that passed every check: the new values, settings and changed names."""

    values: dict[str, Any]
    settings: Settings
    changed: set[str]


def validate(
    current: dict[str, Any], changes: dict[str, Any], *, check_weights_file: bool = True
) -> Accepted | str:
    """Check ``changes`` against ``current`` values: all accepted together, or one reason.

    ``check_weights_file`` is off while the node declares its parameters one by one (whether
    the checkpoint is needed is only known once ``backend`` and ``onnx_model`` are declared).
    """
    candidate = dict(current)
    for name, value in changes.items():
        base = _base_name(name)
        check = _CHECKS.get(base)
        reason = check(value) if check else None
        if reason:  # named as the user wrote it: front.thermal.range, not thermal.range
            return name + reason[len(base) :] if reason.startswith(base) else reason
        candidate[name] = value
    changed = {name for name in candidate if candidate[name] != current.get(name)}
    weights_matter = changed & {"weights", "backend", "onnx_model", "network"} and needs_weights(
        candidate
    )
    if check_weights_file and weights_matter:
        reason = check_weights(candidate["weights"])
        if reason:
            return reason
    try:
        # Backend, device and precision are checked together (fp16 needs CUDA, classical
        # rules run on the CPU) with the engine's own rules, so a reload is only attempted
        # for a combination it accepts.
        check_options(
            candidate["backend"],
            candidate["device"],
            candidate["precision"],
            candidate["compile"],
            candidate["network"],
        )
        if candidate["network"] != "gifnet" and candidate["mode"] not in TIM_MODES:
            return (
                f"network {candidate['network']!r} fuses in modes {', '.join(TIM_MODES)} only, "
                f"not {candidate['mode']!r}"
            )
        settings = Settings.from_values(candidate)
    except ValueError as exc:  # AlignmentError is a ValueError too
        return str(exc)
    return Accepted(candidate, settings, changed)
