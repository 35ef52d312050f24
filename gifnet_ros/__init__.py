"""gifnet_ros: GIFNet thermal/visible image fusion for ROS 2.

`load_model`, `load_tim` (TIM, the second network) and `FusionEngine` are
imported lazily, so that modules with no need for PyTorch (image conversion,
stamp pairing) load fast and a node process pays for torch only once it builds
its engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gifnet_ros.fusion.engine import FusionEngine
    from gifnet_ros.models.gifnet import load_model
    from gifnet_ros.models.tim import load_tim

__all__ = ["FusionEngine", "load_model", "load_tim"]


def __getattr__(name: str) -> Any:
    if name == "FusionEngine":
        from gifnet_ros.fusion.engine import FusionEngine

        return FusionEngine
    if name == "load_model":
        from gifnet_ros.models.gifnet import load_model

        return load_model
    if name == "load_tim":
        from gifnet_ros.models.tim import load_tim

        return load_tim
    raise AttributeError(f"module 'gifnet_ros' has no attribute {name!r}")
