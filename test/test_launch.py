"""Launch files and config/fusion.yaml.

The topic and parameter logic of launch/fusion.launch.py is a plain function and is checked
everywhere; loading the files with ROS' launch system, and launching the installed node, run
only where ``launch_ros`` (and, for the last, a colcon-installed gifnet_ros) is available.
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
from node_harness import DOMAIN_ID, clip_pairs, dds_env

from gifnet_ros.demo import FusionClient, stop_node
from gifnet_ros.node import PARAMETERS

ROOT = Path(__file__).resolve().parents[1]
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
    ]
    assert (arguments["package"], arguments["executable"]) == ("gifnet_ros", "fusion_node")


def test_device_mode_and_backend_override_the_params_file_only_when_given(launch_py):
    params_file, overrides = launch_py.node_arguments(_defaults(launch_py))["parameters"]
    assert params_file == "/p.yaml" and overrides == {"use_sim_time": False}
    _, overrides = launch_py.node_arguments(
        _defaults(
            launch_py, device="cuda:1", mode="grey", backend="onnxruntime", use_sim_time="True"
        )
    )["parameters"]
    assert overrides == {
        "use_sim_time": True,
        "device": "cuda:1",
        "mode": "grey",
        "backend": "onnxruntime",
    }


def test_default_params_file_is_the_package_config(launch_py):
    path = Path(launch_py.default_params_file())
    assert path.name == "fusion.yaml" and path.is_file()
    assert yaml.safe_load(path.read_text()) == yaml.safe_load(CONFIG.read_text())


def test_xml_variant_matches_the_python_one(launch_py):
    root = ElementTree.parse(LAUNCH_XML).getroot()
    arguments = {arg.get("name"): arg.get("default") for arg in root.iter("arg")}
    assert set(arguments) <= set(launch_py.ARGUMENTS)
    for name, default in arguments.items():
        if name != "params_file":
            assert default == launch_py.DEFAULTS[name], name
    (node,) = root.iter("node")
    assert (node.get("pkg"), node.get("exec"), node.get("name")) == (
        "gifnet_ros",
        "fusion_node",
        "fusion_node",
    )

    def expand(text: str) -> str:
        return re.sub(r"\$\(var (\w+)\)", lambda m: launch_py.DEFAULTS[m.group(1)], text)

    remaps = [(r.get("from"), expand(r.get("to"))) for r in node.iter("remap")]
    assert remaps == launch_py.node_arguments(_defaults(launch_py))["remappings"]


def test_launch_description_loads(launch_py):
    pytest.importorskip("launch_ros", reason="launch_ros comes with a ROS 2 install")
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch_ros.actions import Node

    from launch import LaunchContext

    description = launch_py.generate_launch_description()
    declared = [e for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    assert [a.name for a in declared] == list(launch_py.ARGUMENTS)
    context = LaunchContext()
    for argument in declared:
        context.launch_configurations[argument.name] = "".join(
            s.perform(context) for s in argument.default_value
        )
    (function,) = [e for e in description.entities if isinstance(e, OpaqueFunction)]
    (node,) = function.execute(context)
    assert isinstance(node, Node)
    assert node.node_package == "gifnet_ros" and node.node_executable == "fusion_node"


def test_xml_launch_file_loads():
    pytest.importorskip("launch_xml", reason="launch_xml comes with a ROS 2 install")
    from launch.frontend import Parser

    entity, parser = Parser.load(str(LAUNCH_XML))
    description = parser.parse_description(entity)
    names = [type(e).__name__ for e in description.entities]
    assert names.count("DeclareLaunchArgument") == 6 and "Node" in names


_RUN_LAUNCH = """
import sys
from launch import LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import AnyLaunchDescriptionSource
service = LaunchService()
arguments = [tuple(a.split(":=", 1)) for a in sys.argv[2:]]
source = AnyLaunchDescriptionSource(sys.argv[1])
service.include_launch_description(IncludeLaunchDescription(source, launch_arguments=arguments))
sys.exit(service.run())
"""


@pytest.mark.parametrize("launch_file", ["fusion.launch.py", "fusion.launch.xml"])
def test_ros2_launch_starts_a_working_node(tmp_path, weights_path, data_dir, launch_file):
    """What ``ros2 launch gifnet_ros LAUNCH_FILE`` does, in a colcon-installed workspace."""
    pytest.importorskip("launch_ros", reason="launch_ros comes with a ROS 2 install")
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        share = Path(get_package_share_directory("gifnet_ros"))
    except PackageNotFoundError:
        pytest.skip("gifnet_ros is not installed in an ament prefix (colcon build)")
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "/**": {
                    "ros__parameters": {
                        "weights": str(weights_path),
                        "device": "cpu",
                        "diagnostics_period": 0.3,
                    }
                }
            }
        )
    )
    namespace = f"/gifnet_launch_{os.getpid()}_{launch_file.split('.')[-1]}"
    env = {**os.environ, **dds_env(tmp_path)}
    log = tmp_path / "launch.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _RUN_LAUNCH,
                str(share / "launch" / launch_file),
                f"params_file:={params}",
                f"namespace:={namespace}",
                "thermal_topic:=ir",
                "rgb_topic:=colour",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
        )
    client = None
    try:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in dds_env(tmp_path).items():
                patch.setenv(key, value)
            client = FusionClient(namespace, domain_id=DOMAIN_ID, topics=("ir", "colour"))
            client.wait_for_node(90, process)
            client.warm_up(clip_pairs(data_dir, 1)[0], 90)
            assert client.wait_diagnostics(lambda d: d.get("device") == "cpu", 10)
    finally:
        if client is not None:
            client.close()
        code = stop_node(process, timeout=30)
    assert code == 0, log.read_text()
