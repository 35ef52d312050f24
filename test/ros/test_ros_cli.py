"""The package as a ROS user meets it: colcon build/test in a workspace, then the ros2 CLI.

The package's sources are copied into a fresh colcon workspace (as a clone would be) and built
with ``colcon build``; everything after runs as a user types it in a shell that sourced
``install/local_setup.bash`` over the ROS install: ``ros2 pkg executables``, ``ros2 launch``
of both launch files, ``ros2 param``, ``ros2 lifecycle``, ``ros2 run``. The "ROS install" is
this virtual environment with the upstream ROS 2 Python packages of ../shared/ros
(scripts/setup.sh installs them); where they or colcon are missing, the module skips.

Every ros2 CLI call has a timeout and is repeated while the node is not yet discovered
(``--no-daemon`` discovery takes a moment; see ../shared/ros/MANIFEST.md).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from conftest import ROOT, SHARED
from node_harness import DOMAIN_ID, clip_pairs, dds_env, pixels_of

from gifnet_ros.ros.client import FRAME_ID_RGB, FusionClient

pytestmark = [pytest.mark.dds, pytest.mark.distro, pytest.mark.shared]

BIN = Path(sys.executable).parent
COLCON = BIN / "colcon"
CLI_TIMEOUT = 60.0
STARTUP_TIMEOUT = 120.0

if not COLCON.is_file():
    pytest.skip(
        "colcon is not installed here (requirements.txt installs colcon-common-extensions)",
        allow_module_level=True,
    )
if importlib.util.find_spec("ros2cli") is None or importlib.util.find_spec("launch_ros") is None:
    pytest.skip(
        "ros2cli / launch_ros come with a ROS 2 install (scripts/setup.sh installs them from "
        "../shared/ros)",
        allow_module_level=True,
    )

# The executables a ROS user knows from the README; tools added later come on top.
CORE_TOOLS = {
    "fusion_node",
    "fusion_lifecycle_node",
    "fuse",
    "fuse_bag",
    "make_bag",
    "eval",
    "export",
    "weights",
    "demo",
}
# Left out of the copy, like a clone has none of them (".venv*": the project's environments).
NOT_SOURCES = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "build",
    "install",
    "log",
    "__pycache__",
    "*.egg-info",
    ".*_cache",
    ".hypothesis",
    "out",
    "gifnet_demo_out",
)


def _build_env() -> dict[str, str]:
    """The user's shell: the ROS install's tools on PATH. PYTHONDONTWRITEBYTECODE, if this
    shell has it, is dropped: setuptools then warns that it skips byte-compiling, a warning of
    the environment and not of the package."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def colcon(workspace: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run colcon in ``workspace``; returns its output, fails with it on a non-zero exit."""
    done = subprocess.run(
        [str(COLCON), *args],
        cwd=workspace,
        env=env or _build_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def new_workspace(root: Path) -> Path:
    """A colcon workspace with a copy of this package's sources in src/gifnet_ros."""
    shutil.copytree(ROOT, root / "src" / "gifnet_ros", ignore=NOT_SOURCES)
    return root


def sourced_env(workspace: Path, log_dir: Path) -> dict[str, str]:
    """The environment after ``source install/local_setup.bash`` over the ROS install (the
    venv, as /opt/ros/<distro> would be), with this session's private DDS settings."""
    script = f"source {workspace / 'install' / 'local_setup.bash'} && env -0"
    dump = subprocess.run(
        ["bash", "-c", script], env=_build_env(), capture_output=True, check=True
    ).stdout
    env = dict(item.split("=", 1) for item in dump.decode().split("\0") if "=" in item)
    env["AMENT_PREFIX_PATH"] += os.pathsep + sys.prefix
    return {**env, **dds_env(log_dir)}


@dataclass
class Workspace:
    root: Path
    build_output: str
    env: dict[str, str]

    def ros2(self, *args: str, until: str | None = None, within: float = CLI_TIMEOUT) -> str:
        """``ros2 ARGS`` as typed in the sourced shell; with ``until``, repeated for up to
        ``within`` seconds while its output lacks that text, as a user does while a node
        starts and discovery settles. Returns the last output."""
        deadline = time.monotonic() + within
        while True:
            try:
                done = subprocess.run(
                    ["ros2", *args],
                    env=self.env,
                    capture_output=True,
                    text=True,
                    timeout=CLI_TIMEOUT,
                )
                output = done.stdout + done.stderr
            except subprocess.TimeoutExpired as timeout:
                output = f"timed out: {timeout}"
            if until is None or until in output or time.monotonic() > deadline:
                return output

    @contextmanager
    def start(self, args: list[str], log: Path) -> Iterator[subprocess.Popen]:
        """A long-running ``ros2 ...`` command, stopped at the end with SIGINT (Ctrl-C).

        ``ros2 launch`` gets it itself and stops its nodes. ``ros2 run`` does not pass it on
        (in a terminal, Ctrl-C reaches the node directly): there its whole process group gets
        it, as from a terminal.
        """
        with open(log, "wb") as output:
            process = subprocess.Popen(
                ["ros2", *args],
                stdout=output,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        try:
            yield process
        finally:
            if args[0] == "run":
                os.killpg(process.pid, signal.SIGINT)
            else:
                process.send_signal(signal.SIGINT)
            try:
                code = process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                code = process.wait()
            assert code == 0, f"exit code {code} after SIGINT\n{log.read_text()[-3000:]}"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    root = new_workspace(tmp_path_factory.mktemp("colcon_ws"))
    output = colcon(root, "build")
    return Workspace(root, output, sourced_env(root, tmp_path_factory.mktemp("ros_log")))


def _params(tmp_path: Path, weights: Path, **extra) -> Path:
    """A params file; the tests send one pair again and again, which the default
    thermal.freeze_action would skip as a frozen camera."""
    path = tmp_path / "params.yaml"
    values = {
        "weights": str(weights),
        "device": "cpu",
        "diagnostics_period": 0.3,
        "thermal": {"freeze_action": "ignore"},
        **extra,
    }
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": values}}))
    return path


@pytest.fixture(scope="module")
def pip_scripts(tmp_path_factory) -> set[str]:
    """The console scripts a plain-venv ``pip install`` of these sources makes (its wheel's)."""
    source = new_workspace(tmp_path_factory.mktemp("pip")) / "src" / "gifnet_ros"
    wheels = source.parent / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(wheels), str(source)],
        check=True, capture_output=True, env=_build_env(), timeout=300,
    )  # fmt: skip
    (wheel,) = wheels.glob("gifnet_ros-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
        entry_points = archive.read(name).decode()
    section = entry_points.split("[console_scripts]", 1)[1].split("\n[", 1)[0]
    return {line.split("=", 1)[0].strip() for line in section.splitlines() if "=" in line}


def _check_executables(workspace: Workspace, pip_scripts: set[str]) -> None:
    lines = workspace.ros2("pkg", "executables", "gifnet_ros").split("\n")
    names = [line.split()[1] for line in lines if line.startswith("gifnet_ros ")]
    assert len(names) == len(set(names)), names
    assert set(names) >= CORE_TOOLS, names
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", name) for name in names), names
    # The same tools, and only they, are the plain venv's gifnet-* commands.
    assert pip_scripts == {"gifnet-" + name.replace("_", "-") for name in names}


# ---------------------------------------------------------------- colcon build and test


def test_colcon_build_is_quiet_and_installs_each_tool_once_by_its_ros_name(workspace, pip_scripts):
    assert "stderr output" not in workspace.build_output, workspace.build_output
    assert "warning" not in workspace.build_output.lower(), workspace.build_output
    _check_executables(workspace, pip_scripts)
    share = workspace.root / "install" / "gifnet_ros" / "share" / "gifnet_ros"
    for name in ("launch/fusion.launch.py", "launch/fusion.launch.xml", "config/fusion.yaml"):
        assert (share / name).read_bytes() == (ROOT / name).read_bytes(), name


def test_symlink_install_build_is_quiet_and_lists_the_same_tools(tmp_path, pip_scripts):
    root = new_workspace(tmp_path / "ws")
    output = colcon(root, "build", "--symlink-install")
    assert "stderr output" not in output and "warning" not in output.lower(), output
    linked = Workspace(root, output, sourced_env(root, tmp_path))
    _check_executables(linked, pip_scripts)
    launch = root / "install" / "gifnet_ros" / "share" / "gifnet_ros" / "launch"
    assert (launch / "fusion.launch.py").resolve() == (
        root / "src" / "gifnet_ros" / "launch" / "fusion.launch.py"
    )


def _junit(workspace: Path) -> tuple[dict[str, int], list[str]]:
    """Counts of colcon test's pytest.xml and the skip messages in it."""
    suite = ElementTree.parse(workspace / "build" / "gifnet_ros" / "pytest.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {key: int(suite.get(key)) for key in ("tests", "failures", "errors", "skipped")}
    skips = [skip.get("message", "") for skip in suite.iter("skipped")]
    return counts, skips


def test_colcon_test_runs_pytest_with_shared_data_from_gifnet_shared(workspace):
    """The workspace's copy has no ../shared beside it: data tests find it by GIFNET_SHARED,
    and without it skip with their reason instead of failing."""
    if not (SHARED / "data").is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    selection = [
        "--pytest-args",
        "test/models/test_classic.py",
        "test/offline/test_make_bag.py",
        "-k",
        "classic or test_seed_makes_stamps_reproducible",
    ]
    env = {**_build_env(), "GIFNET_SHARED": str(SHARED)}
    colcon(workspace.root, "test", "--packages-select", "gifnet_ros", *selection, env=env)
    counts, _ = _junit(workspace.root)
    assert counts["tests"] > 1 and counts["failures"] == counts["errors"] == 0, counts
    assert counts["skipped"] == 0, counts

    env.pop("GIFNET_SHARED")
    colcon(workspace.root, "test", "--packages-select", "gifnet_ros", *selection, env=env)
    counts, skips = _junit(workspace.root)
    assert counts["failures"] == counts["errors"] == 0, counts
    assert counts["skipped"] == 1 and "shared data not found" in skips[0], skips


# ---------------------------------------------------------------- ros2 launch / param


@pytest.mark.parametrize("launch_file", ["fusion.launch.py", "fusion.launch.xml"])
def test_ros2_launch_fuses_pairs_with_message_filters(
    workspace, tmp_path, weights_path, data_dir, engine, launch_file
):
    """``ros2 launch gifnet_ros FILE`` with launch arguments: topics remapped, the ``device``
    and ``precision`` arguments overriding the params file (whose cuda:7 could not even start
    here; the node's default precision, auto, may pick bf16), pairs synchronised by message_filters'
    ApproximateTimeSynchronizer and fused exactly as the fp32 engine fuses them; then
    parameters changed at run time with ``ros2 param``."""
    params = _params(tmp_path, weights_path, device="cuda:7", sync={"backend": "message_filters"})
    namespace = f"/gifnet_cli_{os.getpid()}_{launch_file.split('.')[-1]}"
    node = f"{namespace}/fusion_node"
    args = [
        "launch",
        "gifnet_ros",
        launch_file,
        f"params_file:={params}",
        f"namespace:={namespace}",
        "thermal_topic:=ir",
        "rgb_topic:=colour",
        "device:=cpu",
        "precision:=fp32",
    ]
    log = tmp_path / "launch.log"
    (pair,) = clip_pairs(data_dir, 1)
    with workspace.start(args, log) as process, pytest.MonkeyPatch.context() as patch:
        for key, value in dds_env(tmp_path).items():
            patch.setenv(key, value)
        client = FusionClient(namespace, domain_id=DOMAIN_ID, topics=("ir", "colour"))
        try:
            client.wait_for_node(STARTUP_TIMEOUT, process)
            stamp = client.warm_up(pair, STARTUP_TIMEOUT)
            fused = client.fused[stamp][0]
            assert fused.header.frame_id == FRAME_ID_RGB
            np.testing.assert_array_equal(pixels_of(fused), engine.fuse(*pair))
            assert client.wait_diagnostics(
                lambda d: d.get("sync_backend") == "message_filters" and d.get("device") == "cpu",
                20,
            ), client.diagnostics

            reply = workspace.ros2(
                "param",
                "set",
                "--no-daemon",
                node,
                "output_encoding",
                "bgr8",
                until="Set parameter successful",
            )
            assert "Set parameter successful" in reply, reply
            got = workspace.ros2(
                "param", "get", "--no-daemon", node, "output_encoding", until="String value is"
            )
            assert "String value is: bgr8" in got, got
            stamp = client.warm_up(pair, 60)
            fused = client.fused[stamp][0]
            assert fused.encoding == "bgr8"
            np.testing.assert_array_equal(pixels_of(fused), engine.fuse(*pair)[..., ::-1])

            refused = workspace.ros2(
                "param",
                "set",
                "--no-daemon",
                node,
                "sync.slop",
                "-1.0",
                until="Setting parameter failed",
            )
            assert "Setting parameter failed" in refused and "sync.slop" in refused, refused
        finally:
            client.close()
    assert "[ERROR]" not in log.read_text(), log.read_text()[-3000:]


@pytest.mark.parametrize("launch_file", ["fusion.launch.py", "fusion.launch.xml"])
def test_ros2_launch_refuses_a_misspelt_argument(workspace, launch_file):
    output = workspace.ros2("launch", "gifnet_ros", launch_file, "devcie:=cuda")
    assert "unknown launch argument 'devcie' (did you mean 'device'?)" in output, output
    assert "process started" not in output, output


# ---------------------------------------------------------------- ros2 run / lifecycle


def test_ros2_lifecycle_set_through_every_transition(
    workspace, tmp_path, weights_path, data_dir, engine
):
    namespace = f"/gifnet_cli_{os.getpid()}_lifecycle"
    node = f"{namespace}/fusion_node"
    params = _params(tmp_path, weights_path, precision="fp32")
    args = [
        "run",
        "gifnet_ros",
        "fusion_lifecycle_node",
        "--ros-args",
        "-r",
        f"__ns:={namespace}",
        "--params-file",
        str(params),
    ]
    (pair,) = clip_pairs(data_dir, 1)

    def state(within: float = CLI_TIMEOUT) -> str:
        return workspace.ros2("lifecycle", "get", "--no-daemon", node, until="[", within=within)

    def transition(name: str) -> None:
        reply = workspace.ros2(
            "lifecycle", "set", "--no-daemon", node, name, until="Transitioning successful"
        )
        assert "Transitioning successful" in reply, f"{name}: {reply}"

    with workspace.start(args, tmp_path / "lifecycle.log") as process:
        assert "unconfigured [1]" in state(STARTUP_TIMEOUT)
        transition("configure")
        assert "inactive [2]" in state()
        transition("activate")
        assert "active [3]" in state()
        with pytest.MonkeyPatch.context() as patch:
            for key, value in dds_env(tmp_path).items():
                patch.setenv(key, value)
            client = FusionClient(namespace, domain_id=DOMAIN_ID)
            try:
                client.wait_for_node(STARTUP_TIMEOUT, process)
                stamp = client.warm_up(pair, STARTUP_TIMEOUT)
                np.testing.assert_array_equal(pixels_of(client.fused[stamp][0]), engine.fuse(*pair))
            finally:
                client.close()
        transition("deactivate")
        assert "inactive [2]" in state()
        transition("cleanup")
        assert "unconfigured [1]" in state()
        transition("shutdown")
        assert "finalized [4]" in state()


def test_ros2_run_fuse_matches_the_engine(workspace, crops, engine, weights_path, tmp_path):
    ir_dir, vis_dir = crops
    out = tmp_path / "fused.png"
    output = workspace.ros2(
        "run",
        "gifnet_ros",
        "fuse",
        str(ir_dir / "FLIR_00006.png"),
        str(vis_dir / "FLIR_00006.png"),
        "-o",
        str(out),
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--weights",
        str(weights_path),
    )
    assert out.is_file(), output
    grey = cv2.imread(str(ir_dir / "FLIR_00006.png"), cv2.IMREAD_GRAYSCALE)
    rgb = cv2.cvtColor(cv2.imread(str(vis_dir / "FLIR_00006.png")), cv2.COLOR_BGR2RGB)
    fused = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(fused, engine.fuse(grey, rgb))
