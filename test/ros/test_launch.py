"""Launch files and config/fusion.yaml.

The topic, parameter and argument-check logic of launch/fusion.launch.py are plain functions
and the XML is read as XML: checked everywhere. Loading both files with ROS' launch system
and ``ros2 launch --show-args`` run where launch_ros and ros2launch are installed (a ROS
install, or ../shared/ros in the venv); launching the node from a colcon workspace is in
test_ros_cli.py.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import yaml

from gifnet_ros.ros.node import PARAMETERS

pytestmark = [pytest.mark.dds, pytest.mark.distro]

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_PY = ROOT / "launch" / "fusion.launch.py"
LAUNCH_XML = ROOT / "launch" / "fusion.launch.xml"
CONFIG = ROOT / "config" / "fusion.yaml"


@pytest.fixture(scope="module")
def launch_py():
    spec = importlib.util.spec_from_file_location("gifnet_fusion_launch", LAUNCH_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _defaults(launch_py, **changes: str) -> dict[str, str]:
    return {"params_file": "/p.yaml", **launch_py.DEFAULTS, **changes}


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_config_yaml_lists_every_parameter_with_its_default():
    document = yaml.safe_load(CONFIG.read_text())
    values = _flatten(document["/**"]["ros__parameters"])
    assert values == {spec.name: spec.default for spec in PARAMETERS}


def test_config_yaml_comments_every_parameter():
    """Each parameter line has a comment block right above it (shared by adjacent lines)."""
    lines = CONFIG.read_text().splitlines()
    leaf = re.compile(r"^\s+([a-z_]+):\s+\S")
    for number, line in enumerate(lines):
        if not leaf.match(line) or "ros__parameters" in line:
            continue
        above = number - 1
        while leaf.match(lines[above]):
            above -= 1
        assert lines[above].strip().startswith("#"), f"config line {number + 1}: {line.strip()}"


def test_inputs_are_remapped_with_their_compressed_variants(launch_py):
    arguments = launch_py.node_arguments(
        _defaults(launch_py, thermal_topic="/flir/image_raw", fused_topic="/fused")
    )
    assert arguments["remappings"] == [
        ("thermal/image", "/flir/image_raw"),
        ("thermal/image/compressed", "/flir/image_raw/compressed"),
        ("rgb/image", "rgb/image"),
        ("rgb/image/compressed", "rgb/image/compressed"),
        ("fused/image", "/fused"),
        ("fused/image/compressed", "/fused/compressed"),
    ]
    assert (arguments["package"], arguments["executable"]) == ("gifnet_ros", "fusion_node")


def test_heads_argument_lists_the_camera_heads(launch_py):
    _, overrides = launch_py.node_arguments(_defaults(launch_py, heads=" front, rear "))[
        "parameters"
    ]
    assert overrides["heads"] == ["front", "rear"]
    _, overrides = launch_py.node_arguments(_defaults(launch_py))["parameters"]
    assert "heads" not in overrides  # empty: the params file's heads


def test_parameter_arguments_override_the_params_file_only_when_given(launch_py):
    params_file, overrides = launch_py.node_arguments(_defaults(launch_py))["parameters"]
    assert params_file == "/p.yaml" and overrides == {"use_sim_time": False}
    given = {
        "device": "cuda:1",
        "mode": "grey",
        "backend": "onnxruntime",
        "precision": "bf16",
        "network": "tim_light",
        "compressed": "true",
        "use_sim_time": "True",
    }
    _, overrides = launch_py.node_arguments(_defaults(launch_py, **given))["parameters"]
    assert overrides == {**given, "compressed": True, "use_sim_time": True}
    _, overrides = launch_py.node_arguments(_defaults(launch_py, compressed="false"))["parameters"]
    assert overrides["compressed"] is False


def test_parameter_arguments_name_real_node_parameters(launch_py):
    """An override of a parameter the node does not declare would be dropped by rclpy without
    a word."""
    declared = {spec.name for spec in PARAMETERS}
    assert {*launch_py.OVERRIDES, "compressed"} <= declared


def test_default_params_file_is_the_package_config(launch_py):
    path = Path(launch_py.default_params_file())
    assert path.name == "fusion.yaml" and path.is_file()
    assert yaml.safe_load(path.read_text()) == yaml.safe_load(CONFIG.read_text())


def _xml_arguments() -> dict[str, dict]:
    root = ElementTree.parse(LAUNCH_XML).getroot()
    return {
        arg.get("name"): {
            "default": arg.get("default"),
            "description": arg.get("description"),
            "choices": [choice.get("value") for choice in arg.iter("choice")] or None,
        }
        for arg in root.findall("arg")
    }


def test_xml_and_python_files_declare_the_same_arguments(launch_py):
    """Same names in the same order, defaults, descriptions and choices (params_file's default
    is the installed config in both, spelt as each format can)."""
    xml = _xml_arguments()
    assert list(xml) == list(launch_py.ARGUMENTS)
    assert xml.pop("params_file")["default"] == "$(find-pkg-share gifnet_ros)/config/fusion.yaml"
    for name, declared in xml.items():
        assert declared["default"] == launch_py.DEFAULTS[name], name
        assert declared["description"] == launch_py.ARGUMENTS[name], name
        assert declared["choices"] == launch_py.CHOICES.get(name), name


def test_xml_file_hands_every_argument_to_the_python_file(launch_py):
    root = ElementTree.parse(LAUNCH_XML).getroot()
    (include,) = root.findall("include")
    assert include.get("file") == "$(dirname)/fusion.launch.py"
    passed = {arg.get("name"): arg.get("value") for arg in include.findall("arg")}
    assert passed == {name: f"$(var {name})" for name in launch_py.ARGUMENTS}
    assert not root.findall("node"), "the node is defined once, in fusion.launch.py"


def test_misspelt_arguments_are_told_apart_from_other_launch_files_ones(launch_py):
    declared = [f"{name}:=x" for name in launch_py.ARGUMENTS]
    assert launch_py.unknown_arguments([*declared, "launch-prefix:=gdb -ex run"]) == ([], [])
    misspelt, other = launch_py.unknown_arguments(
        ["devcie:=cuda", "compresed:=true", "robot_name:=r1", "rgb_topic:=/c", "network:=tim"]
    )
    assert misspelt == [
        "'devcie' (did you mean 'device'?)",
        "'compresed' (did you mean 'compressed'?)",
    ]
    assert other == ["'robot_name'"]


# ---------------------------------------------------------------- with ROS' launch system


@pytest.fixture
def ros_environment(monkeypatch) -> None:
    """What sourcing a ROS install sets and launch relies on (it finds its XML grammar through
    the ament index): the prefixes already there (colcon test: just the workspace's), then this
    Python's, which in a venv stands for the ROS install."""
    prefixes = [os.environ.get("AMENT_PREFIX_PATH", ""), sys.prefix]
    monkeypatch.setenv("AMENT_PREFIX_PATH", os.pathsep.join(p for p in prefixes if p))


def _declared(description) -> dict:
    from launch.actions import DeclareLaunchArgument

    return {
        entity.name: entity
        for entity in description.entities
        if isinstance(entity, DeclareLaunchArgument)
    }


def test_python_launch_description_makes_the_node(launch_py):
    pytest.importorskip("launch_ros", reason="launch_ros comes with a ROS 2 install")
    from launch.actions import OpaqueFunction
    from launch_ros.actions import Node

    from launch import LaunchContext

    description = launch_py.generate_launch_description()
    declared = _declared(description)
    assert list(declared) == list(launch_py.ARGUMENTS)
    context = LaunchContext(argv=["device:=cpu"])
    context.launch_configurations["device"] = "cpu"
    for argument in declared.values():
        argument.execute(context)
    assert context.launch_configurations["device"] == "cpu"
    check, make = [e for e in description.entities if isinstance(e, OpaqueFunction)]
    assert check.execute(context) == []
    (node,) = make.execute(context)
    assert isinstance(node, Node)
    assert node.node_package == "gifnet_ros" and node.node_executable == "fusion_node"


def test_python_launch_description_refuses_a_bad_choice(launch_py):
    pytest.importorskip("launch_ros", reason="launch_ros comes with a ROS 2 install")
    from launch import LaunchContext

    context = LaunchContext()
    context.launch_configurations["network"] = "gifnett"
    with pytest.raises(RuntimeError, match="gifnett"):
        _declared(launch_py.generate_launch_description())["network"].execute(context)


def test_argument_check_stops_a_misspelt_launch_and_warns_about_others(launch_py, caplog):
    pytest.importorskip("launch_ros", reason="launch_ros comes with a ROS 2 install")
    from launch.actions import OpaqueFunction

    from launch import LaunchContext

    check = next(
        e for e in launch_py.generate_launch_description().entities if isinstance(e, OpaqueFunction)
    )
    with pytest.raises(RuntimeError, match=r"unknown launch argument 'devcie' \(did you mean"):
        check.execute(LaunchContext(argv=["devcie:=cuda"]))
    import launch.logging

    messages = []
    handler = launch.logging.logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = launch.logging.get_logger("gifnet_ros.launch")
    logger.addHandler(handler)
    try:
        assert check.execute(LaunchContext(argv=["robot_name:=r1"])) == []
    finally:
        logger.removeHandler(handler)
    assert len(messages) == 1 and "'robot_name'" in messages[0], messages


def test_xml_launch_file_loads_with_the_python_files_arguments(launch_py, ros_environment):
    pytest.importorskip("launch_xml", reason="launch_xml comes with a ROS 2 install")
    from launch.actions import IncludeLaunchDescription
    from launch.frontend import Parser

    entity, parser = Parser.load(str(LAUNCH_XML))
    description = parser.parse_description(entity)
    assert list(_declared(description)) == list(launch_py.ARGUMENTS)
    (include,) = [e for e in description.entities if isinstance(e, IncludeLaunchDescription)]
    assert [name[0].text for name, _ in include.launch_arguments] == list(launch_py.ARGUMENTS)


def _show_args(path: Path) -> list[tuple[str, str]]:
    """``ros2 launch FILE --show-args`` as (name, description) pairs, in order."""
    ros2 = Path(sys.executable).parent / "ros2"
    done = subprocess.run(
        [str(ros2), "launch", str(path), "--show-args"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return re.findall(r"^    '(\w+)':\n        (.*)$", done.stdout, re.MULTILINE)


def test_ros2_launch_shows_the_same_arguments_for_both_files(launch_py, ros_environment):
    pytest.importorskip("ros2launch", reason="ros2launch comes with a ROS 2 install")
    shown = _show_args(LAUNCH_PY)
    assert [name for name, _ in shown] == list(launch_py.ARGUMENTS)
    assert _show_args(LAUNCH_XML) == shown
