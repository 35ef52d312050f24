"""The fusion engine's options, as one value the tools, the node and the fleet share.

``FusionEngine(EngineOptions(...))`` and ``FusionEngine(weights, device, ..., network=...)``
build the same engine: the keyword form is the public API, the dataclass is what code passes
around (gifnet_ros.tools.engine_args builds one from the command-line flags, the node's model
loader from its parameters), so a new option is one field here and its FusionEngine argument
(a test keeps the two in step) rather than one more argument threaded through every caller.

The fields (FusionEngine's arguments of the same names; the first four, in this order, may
also be given by position):

- ``weights``: the checkpoint (None: the network's default, for TIM the weights this project
  trained, not the authors'; the authors' TIM ivif pair as one string
  ``"model_1.pt,model_2.pt"``, as a flag or a node parameter gives it).
- ``device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
- ``precision``: ``auto``, ``fp32`` (exact), ``bf16`` or ``fp16`` (gifnet_ros.fusion.precision
  has the rule ``auto`` follows).
- ``mode``, ``chroma_rule``: the fusion task and how two colour inputs mix their chroma (the
  engine's module docstring).
- ``thermal_norm``, ``thermal_range``, ``thermal_percentiles``: how a 16-bit or float thermal
  frame becomes 8 bits (gifnet_ros.fusion.thermal).
- ``verify_hash``: refuse a GIFNet checkpoint whose hash is not the published one (False for
  fine-tuned checkpoints).
- ``backend``: ``auto`` (torch, except TIM on x86 CPUs without native bf16: onnxruntime, as
  fast there and smaller), ``torch``, ``onnxruntime`` with an exported graph
  (gifnet_ros.models.onnx), or a classical rule with no weights (``classic_average``,
  ``classic_max``, ``classic_laplacian``, ``classic_gff``; gifnet_ros.models.classic): the same
  colour, thermal and size handling around a rule in place of the network, so a robot without
  the checkpoint still fuses and users can compare. Classic backends load nothing, run on the
  CPU in fp32 and always at full size.
- ``onnx_model``, ``providers``: the ONNX file (default: the cached export of the network with
  these weights) and ONNX Runtime's providers in order of preference (``cpu``, ``cuda``,
  ``tensorrt``).
- ``threads``: CPU threads for inference: PyTorch's, a process-wide setting
  (gifnet_ros.fusion.process), and the ONNX Runtime session's; the physical core count is
  best.
- ``compile``: torch.compile the network (once per input size, cached by PyTorch; CUDA graphs
  on CUDA). Off by default: the README says when it pays.
- ``max_pixels``, ``inference_scale``, ``restore``: fuse the luminance at a reduced size and
  bring it back to full size (``detail`` adds back the two inputs' high-frequency detail lost
  by the reduction, ``bilinear`` only upsamples).
- ``network``: ``gifnet``, or TIM (``tim``, its two-stage infrared/visible pipeline, or
  ``tim_light``) for modes ``thermal_rgb`` and ``grey``, the modes TIM has weights for. The
  colour, thermal, precision and size handling are the same for every network.

benchmarks/README.md has the measurements behind the speed options. The values are checked
when an engine is built (gifnet_ros.fusion.engine.check_options), not here: the node checks a
parameter change with the same rules before it starts a reload.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EngineOptions:
    """Everything that decides how a FusionEngine fuses; see the module docstring."""

    weights: str | Path | None = None
    device: str = "auto"
    precision: str = "auto"
    mode: str = "thermal_rgb"
    thermal_norm: str = "percentile"
    thermal_range: tuple[float, float] = (0.0, 65535.0)
    thermal_percentiles: tuple[float, float] = (1.0, 99.0)
    chroma_rule: str = "neutral"
    verify_hash: bool = True
    backend: str = "auto"
    onnx_model: str | Path | None = None
    providers: Sequence[str] | None = None
    threads: int | None = None
    compile: bool = False
    max_pixels: int | None = None
    inference_scale: float = 1.0
    restore: str = "detail"
    network: str = "gifnet"

    def __post_init__(self) -> None:
        # Tuples, so that options built from lists (argparse's nargs, a parameter split on
        # commas) compare equal to the same options built from tuples.
        for name in ("thermal_range", "thermal_percentiles", "providers"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
