"""Starting the node: bad configurations stop it with one line; the message_filters backend.

A node that cannot run as configured must say why in one line and exit non-zero, rather than
come up half-working or print a traceback; a missing checkpoint names the command that gets
it where the node runs.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from node_harness import (
    FRAME,
    clip_pairs,
    dds_env,
    mono8_pair,
    pixels_of,
    raw_image,
    running_node,
    stamp,
)

from gifnet_ros.fusion.engine import FusionEngine
from gifnet_ros.models.weights import ROS_EXECUTABLE, ROS_PACKAGE
from gifnet_ros.ros.node_process import start_node, stop_node

pytestmark = [pytest.mark.dds, pytest.mark.distro, pytest.mark.shared]

HAVE_MESSAGE_FILTERS = importlib.util.find_spec("message_filters") is not None


def _start_and_wait(tmp_path, parameters: dict) -> tuple[int | None, str]:
    """Run the node with ``parameters`` until it exits (or 90 s); exit code and log."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in dds_env(tmp_path).items():
            patch.setenv(key, value)
        log = tmp_path / "node.log"
        process = start_node("/gifnet_test_startup", parameters, log)
        try:
            code = process.wait(90)
        except Exception:
            stop_node(process)
            code = None
    return code, log.read_text(errors="replace")


@pytest.mark.parametrize(
    "parameters, message",
    [
        ({"mode": "nonsense"}, "mode 'nonsense'"),
        ({"align.homography": [1.0, 0.0, 0.0]}, "align.homography needs 9 numbers"),
        ({"weights": "/nonexistent/Final.model"}, "/nonexistent/Final.model"),
        ({"max_age": 1}, "max_age"),  # an integer where a double is declared
        ({"backend": "classic_gff", "device": "cuda"}, "runs on the CPU"),
    ],
)
def test_bad_configuration_stops_the_node_with_one_line(
    tmp_path, weights_path, parameters, message
):
    code, log = _start_and_wait(tmp_path, {"weights": str(weights_path), **parameters})
    assert code == 1, log
    lines = [line for line in log.splitlines() if "cannot start" in line]
    assert len(lines) == 1 and message in lines[0], log
    assert "Traceback" not in log


def test_classic_backend_starts_and_fuses_without_any_weights(tmp_path, data_dir, monkeypatch):
    """No checkpoint anywhere (no parameter, no GIFNET_WEIGHTS, an empty cache): a node with a
    classical backend still starts and publishes the rule's fusion."""
    monkeypatch.delenv("GIFNET_WEIGHTS", raising=False)
    monkeypatch.setenv("GIFNET_CACHE_DIR", str(tmp_path / "empty-cache"))
    pairs = clip_pairs(data_dir, 2)
    parameters = {"device": "cpu", "sync.backend": "builtin", "backend": "classic_laplacian"}
    with running_node(tmp_path, "classic", parameters, pairs[0]) as node:
        fused = node.fuse(*mono8_pair(pairs[1], stamp()))
        rule = FusionEngine(backend="classic_laplacian")
        np.testing.assert_array_equal(pixels_of(fused), rule.fuse(*pairs[1]))
        assert "classic_laplacian" in node.log()


@pytest.mark.skipif(HAVE_MESSAGE_FILTERS, reason="message_filters is installed here")
def test_required_message_filters_missing_is_a_startup_error(tmp_path, weights_path):
    code, log = _start_and_wait(
        tmp_path, {"weights": str(weights_path), "sync.backend": "message_filters"}
    )
    assert code == 1, log
    assert "sync.backend is message_filters but the message_filters package is not" in log
    assert "Traceback" not in log


def test_message_filters_backend_pairs_like_the_builtin_one(
    tmp_path_factory, weights_path, data_dir
):
    pytest.importorskip("message_filters", reason="message_filters comes with a ROS install")
    pairs = clip_pairs(data_dir, 2)
    engine = FusionEngine(weights=weights_path, device="cpu", precision="fp32")
    parameters = {
        "device": "cpu",
        "weights": str(weights_path),
        "sync.backend": "message_filters",
        "diagnostics_period": 0.3,
    }
    with running_node(
        tmp_path_factory.mktemp("sync"), "message_filters", parameters, pairs[0]
    ) as node:
        assert node.diagnostics_after("fused", 1)["sync_backend"] == "message_filters"
        fused = node.fuse(*mono8_pair(pairs[1], stamp()))
        np.testing.assert_array_equal(pixels_of(fused), engine.fuse(*pairs[1]))
        # Offset stamps within the slop pair as well and keep the RGB stamp.
        rgb_stamp = stamp()
        node.client.publish(
            raw_image(pairs[1][0], "mono8", rgb_stamp + 10_000_000, FRAME["thermal"]),
            raw_image(pairs[1][1], "rgb8", rgb_stamp, FRAME["rgb"]),
        )
        node.client.publish(
            None, raw_image(pairs[1][1], "rgb8", rgb_stamp + 100_000_000, FRAME["rgb"])
        )
        assert node.client.wait_fused(rgb_stamp, 60) is not None, node.log()[-2000:]


def _ros_install(root: Path) -> Path:
    """An install prefix laid out as colcon makes it: the package's executables (console-script
    launchers, like setuptools writes) in lib/gifnet_ros, off PATH, and its ament index entry."""
    lib = root / "lib" / ROS_PACKAGE
    lib.mkdir(parents=True)
    for name, module in (
        ("fusion_node", "gifnet_ros.ros.node"),
        (ROS_EXECUTABLE, "gifnet_ros.tools.weights"),
    ):
        launcher = lib / name
        launcher.write_text(
            f"#!{sys.executable}\nimport sys\nfrom {module} import main\nsys.exit(main())\n"
        )
        launcher.chmod(0o755)
    index = root / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True)
    (index / ROS_PACKAGE).write_text("")
    return lib


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """No checkpoint anywhere: no GIFNET_WEIGHTS, an empty cache."""
    monkeypatch.delenv("GIFNET_WEIGHTS", raising=False)
    monkeypatch.setenv("GIFNET_CACHE_DIR", str(tmp_path / "empty-cache"))
    for key, value in dds_env(tmp_path).items():
        monkeypatch.setenv(key, value)


def _fatal_line(output: str) -> str:
    (line,) = [line for line in output.splitlines() if "cannot start" in line]
    return line


def test_missing_weights_in_a_plain_install_say_gifnet_weights(tmp_path, no_weights):
    code, log = _start_and_wait(tmp_path, {})
    assert code == 1, log
    assert "run `gifnet-weights` to download" in _fatal_line(log)


def test_missing_weights_under_ros_say_ros2_run(tmp_path, no_weights):
    """Started from an install space (what ros2 run and ros2 launch execute): the error names
    ``ros2 run gifnet_ros weights``, and that executable is there and runs."""
    lib = _ros_install(tmp_path / "install")
    node = subprocess.run(
        [str(lib / "fusion_node")], capture_output=True, text=True, timeout=120, check=False
    )
    assert node.returncode == 1, node.stdout + node.stderr
    command = f"ros2 run {ROS_PACKAGE} {ROS_EXECUTABLE}"
    assert f"run `{command}` to download" in _fatal_line(node.stdout + node.stderr)
    tool = subprocess.run(
        [str(lib / ROS_EXECUTABLE), "--help"], capture_output=True, text=True, check=False
    )
    assert tool.returncode == 0 and tool.stdout.startswith(f"usage: {command}"), tool.stderr


def test_the_named_ros2_run_command_runs(tmp_path, no_weights):
    """The command from the error, typed as a ROS user would (needs ros2cli, ../shared/ros)."""
    ros2 = shutil.which("ros2") or shutil.which("ros2", path=str(Path(sys.executable).parent))
    if ros2 is None:
        pytest.skip("ros2 (ros2cli) is not installed: it comes with a ROS install")
    _ros_install(tmp_path / "install")
    env = {**os.environ, "AMENT_PREFIX_PATH": str(tmp_path / "install")}
    result = subprocess.run(
        [ros2, "run", ROS_PACKAGE, ROS_EXECUTABLE, "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr  # ran, found no checkpoint
    assert str(tmp_path / "empty-cache" / "Final.model") in result.stdout + result.stderr
