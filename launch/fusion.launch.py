"""Launch the GIFNet fusion node.

    ros2 launch gifnet_ros fusion.launch.py
    ros2 launch gifnet_ros fusion.launch.py namespace:=front \\
        thermal_topic:=/flir/image_raw rgb_topic:=/camera/color/image_raw device:=cuda

Arguments (``ros2 launch gifnet_ros fusion.launch.py --show-args`` lists them):

- ``params_file``: node parameters, default the installed ``config/fusion.yaml`` (which
  documents every parameter); copy it to change anything not listed here.
- ``namespace``: namespace of the node and of its relative topics.
- ``thermal_topic``, ``rgb_topic``, ``fused_topic``: remap the node's ``thermal/image``,
  ``rgb/image`` and ``fused/image``. The inputs' ``/compressed`` variants (image_transport
  naming, used with ``compressed: true``) follow their base topic.
- ``device``, ``mode``, ``backend``: override the params file; empty (default) keeps its
  values.
- ``use_sim_time``: use /clock (bag playback with ``--clock``, simulators).

The topic/parameter logic is in :func:`node_arguments`, a plain function without launch
imports, so it can be tested where no ROS launch system is installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PACKAGE = "gifnet_ros"
ARGUMENTS = {
    "params_file": "node parameters (YAML); default: the installed config/fusion.yaml",
    "namespace": "namespace of the node and its relative topics",
    "thermal_topic": "thermal input (sensor_msgs/Image; +/compressed with compressed:=true)",
    "rgb_topic": "RGB input (sensor_msgs/Image; +/compressed with compressed:=true)",
    "fused_topic": "fused output (sensor_msgs/Image with the RGB header)",
    "device": "auto, cpu, cuda or cuda:N; empty keeps the params file's value",
    "mode": "fusion mode, e.g. thermal_rgb; empty keeps the params file's value",
    "backend": "torch, onnxruntime or classic_*; empty keeps the params file's value",
    "use_sim_time": "true to follow /clock",
}


def default_params_file() -> str:
    """The installed config/fusion.yaml, or the source tree's when run from a checkout."""
    try:
        from ament_index_python.packages import get_package_share_directory

        return str(Path(get_package_share_directory(PACKAGE)) / "config" / "fusion.yaml")
    except (ImportError, LookupError, OSError):  # not installed; no AMENT_PREFIX_PATH
        return str(Path(__file__).resolve().parent.parent / "config" / "fusion.yaml")


DEFAULTS = {
    "namespace": "",
    "thermal_topic": "thermal/image",
    "rgb_topic": "rgb/image",
    "fused_topic": "fused/image",
    "device": "",
    "mode": "",
    "backend": "",
    "use_sim_time": "false",
}


def node_arguments(values: dict[str, str]) -> dict[str, Any]:
    """Keyword arguments of ``launch_ros.actions.Node`` for the launch argument ``values``."""
    overrides: dict[str, Any] = {
        "use_sim_time": values["use_sim_time"].strip().lower() in ("true", "1", "yes", "on")
    }
    for name in ("device", "mode", "backend"):
        if values[name].strip():
            overrides[name] = values[name].strip()
    remappings = []
    for base, argument in (("thermal/image", "thermal_topic"), ("rgb/image", "rgb_topic")):
        target = values[argument]
        remappings += [(base, target), (f"{base}/compressed", f"{target}/compressed")]
    remappings.append(("fused/image", values["fused_topic"]))
    return {
        "package": PACKAGE,
        "executable": "fusion_node",
        "name": "fusion_node",
        "namespace": values["namespace"],
        "parameters": [values["params_file"], overrides],
        "remappings": remappings,
        "output": "screen",
        "emulate_tty": True,  # keep coloured, line-buffered log output under launch
    }


def _launch_node(context: Any) -> list[Any]:
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    return [Node(**node_arguments(values))]


def generate_launch_description() -> Any:
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    from launch import LaunchDescription

    defaults = {"params_file": default_params_file(), **DEFAULTS}
    return LaunchDescription(
        [
            DeclareLaunchArgument(name, default_value=defaults[name], description=text)
            for name, text in ARGUMENTS.items()
        ]
        + [OpaqueFunction(function=_launch_node)]
    )
