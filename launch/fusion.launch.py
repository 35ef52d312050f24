"""Launch the GIFNet fusion node.

    ros2 launch gifnet_ros fusion.launch.py
    ros2 launch gifnet_ros fusion.launch.py namespace:=front \\
        thermal_topic:=/flir/image_raw rgb_topic:=/camera/color/image_raw device:=cuda

Arguments (``ros2 launch gifnet_ros fusion.launch.py --show-args`` lists them; the XML variant
fusion.launch.xml takes the same ones):

- ``params_file``: node parameters, default the installed ``config/fusion.yaml`` (which
  documents every parameter); copy it to change anything not listed here.
- ``namespace``: namespace of the node and of its relative topics.
- ``thermal_topic``, ``rgb_topic``, ``fused_topic``: remap the node's ``thermal/image``,
  ``rgb/image`` and ``fused/image``. The inputs' ``/compressed`` variants (image_transport
  naming, used with ``compressed:=true``) follow their base topic.
- ``device``, ``mode``, ``backend``, ``precision``, ``network``, ``compressed``: override the
  params file's parameter of that name; empty (the default) keeps the params file's value.
- ``heads``: camera heads served by this one node (one model), comma-separated, e.g.
  ``heads:=front,rear``: each head's topics live in its namespace (``front/thermal/image``,
  ``front/rgb/image`` -> ``front/fused/image``) and its ``front.align.*``, ``front.thermal.*``
  and ``front.sync.thermal_offset`` parameters come from the params file. Empty keeps the
  params file's value (one head in the node's namespace); the topic arguments remap that one.
- ``use_sim_time``: use /clock (bag playback with ``--clock``, simulators).

A launch argument this file does not declare (``devcie:=cuda``) would be ignored without a
word by launch; :func:`unknown_arguments` stops the launch for one that looks like a
misspelt argument of this file and warns about any other.

The topic/parameter logic is in plain functions without launch imports, so it can be tested
where no ROS launch system is installed.
"""

from __future__ import annotations

import difflib
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
    "backend": "auto, torch, onnxruntime or classic_*; empty keeps the params file's value (auto)",
    "precision": "inference precision, e.g. fp32; empty keeps the params file's value",
    "network": "gifnet, tim or tim_light; empty keeps the params file's value",
    "compressed": "true: subscribe to <topic>/compressed (sensor_msgs/CompressedImage) for "
    "both inputs, false: to <topic>; empty keeps the params file's value",
    "heads": "camera heads of one node, comma-separated (front,rear), each in its namespace; "
    "empty keeps the params file's value",
    "use_sim_time": "true to follow /clock",
}
DEFAULTS = {
    "namespace": "",
    "thermal_topic": "thermal/image",
    "rgb_topic": "rgb/image",
    "fused_topic": "fused/image",
    "device": "",
    "mode": "",
    "backend": "",
    "precision": "",
    "network": "",
    "compressed": "",
    "heads": "",
    "use_sim_time": "false",
}
# Values launch itself checks before the node starts; the node checks the others with a reason.
CHOICES = {
    "network": ["", "gifnet", "tim", "tim_light"],
    "compressed": ["", "true", "false"],
}
# Node parameters that the launch argument of the same name overrides when it is not empty.
OVERRIDES = ("device", "mode", "backend", "precision", "network")
TRUE = ("true", "1", "yes", "on")
# Set by `ros2 launch --launch-prefix ...` for every node; not an argument of any one file.
LAUNCH_WIDE = ("launch-prefix", "launch-prefix-filter")


def default_params_file() -> str:
    """The installed config/fusion.yaml, or the source tree's when run from a checkout."""
    try:
        from ament_index_python.packages import get_package_share_directory

        return str(Path(get_package_share_directory(PACKAGE)) / "config" / "fusion.yaml")
    except (ImportError, LookupError, OSError):  # not installed; no AMENT_PREFIX_PATH
        return str(Path(__file__).resolve().parent.parent / "config" / "fusion.yaml")


def node_arguments(values: dict[str, str]) -> dict[str, Any]:
    """Keyword arguments of ``launch_ros.actions.Node`` for the launch argument ``values``."""
    overrides: dict[str, Any] = {"use_sim_time": values["use_sim_time"].strip().lower() in TRUE}
    for name in OVERRIDES:
        if values[name].strip():
            overrides[name] = values[name].strip()
    if values["compressed"]:
        overrides["compressed"] = values["compressed"] == "true"
    if values["heads"].strip():
        overrides["heads"] = [name.strip() for name in values["heads"].split(",")]
    remappings = []
    for base, argument in (("thermal/image", "thermal_topic"), ("rgb/image", "rgb_topic")):
        target = values[argument]
        remappings += [(base, target), (f"{base}/compressed", f"{target}/compressed")]
    fused = values["fused_topic"]
    remappings += [("fused/image", fused), ("fused/image/compressed", f"{fused}/compressed")]
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


def unknown_arguments(argv: list[str]) -> tuple[list[str], list[str]]:
    """The ``name:=value`` items of ``argv`` this file does not declare: (misspelt, other).

    ``argv`` is what ``ros2 launch`` was given. When a launch file includes this one, it also
    holds that file's own arguments, which are fine: only names close to one of ours are
    taken for misspellings of it; the rest get a warning, not an error.
    """
    misspelt, other = [], []
    for item in argv:
        name = item.split(":=", 1)[0]
        if ":=" not in item or name in ARGUMENTS or name in LAUNCH_WIDE:
            continue
        close = difflib.get_close_matches(name, ARGUMENTS, n=1, cutoff=0.75)
        if close:
            misspelt.append(f"'{name}' (did you mean '{close[0]}'?)")
        else:
            other.append(f"'{name}'")
    return misspelt, other


def _check_arguments(context: Any) -> list[Any]:
    import launch.logging

    misspelt, other = unknown_arguments(list(context.argv))
    valid = ", ".join(ARGUMENTS)
    if misspelt:
        raise RuntimeError(
            f"fusion.launch: unknown launch argument {', '.join(misspelt)}; it takes: {valid}"
        )
    if other:
        launch.logging.get_logger("gifnet_ros.launch").warning(
            f"launch argument {', '.join(other)} is not one of fusion.launch's and is ignored "
            f"by it (unless a launch file that includes it uses it); it takes: {valid}"
        )
    return []


def _launch_node(context: Any) -> list[Any]:
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    return [Node(**node_arguments(values))]


def generate_launch_description() -> Any:
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    from launch import LaunchDescription

    defaults = {"params_file": default_params_file(), **DEFAULTS}
    declarations = [
        DeclareLaunchArgument(
            name, default_value=defaults[name], description=text, choices=CHOICES.get(name)
        )
        for name, text in ARGUMENTS.items()
    ]
    return LaunchDescription(
        [
            OpaqueFunction(function=_check_arguments),
            *declarations,
            OpaqueFunction(function=_launch_node),
        ]
    )
