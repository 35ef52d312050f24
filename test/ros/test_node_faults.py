"""Faults the node must survive: a failing model, a stopped camera, a clock jumping back, stop.

The model failure is real code raising in the node process: the node is started through
``test/fault_node.py``, which installs a fault injector through the node's engine hook and is
told what to inject by environment variables; the machine has no GPU, so ``fallback_to_cpu``
is exercised with the injector's fake CUDA device. Everything else is the real node over DDS.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from fault_node import FAKE_CUDA_ENV, MODEL_ERROR_ENV
from node_harness import (
    EXIT_TIMEOUT,
    FAULT_NODE,
    FRAME,
    clip_pairs,
    mono8_pair,
    pixels_of,
    raw_image,
    running_node,
    stamp,
    time_msg,
)

from gifnet_ros.ros.node_process import stop_node

pytestmark = [pytest.mark.dds, pytest.mark.shared]

FAILING_PASSES = (3, 5)
PARAMETERS = {"device": "cpu", "sync.backend": "builtin", "diagnostics_period": 0.1}


@pytest.fixture(scope="module")
def pairs(data_dir):
    return clip_pairs(data_dir, 2)


@pytest.fixture(scope="module")
def node(tmp_path_factory, weights_path, pairs):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(MODEL_ERROR_ENV, ",".join(map(str, FAILING_PASSES)))
        patch.setenv(FAKE_CUDA_ENV, "1")
        with running_node(
            tmp_path_factory.mktemp("faults"),
            "faults",
            {**PARAMETERS, "weights": str(weights_path)},
            pairs[0],
            script=FAULT_NODE,
        ) as running:
            yield running


def _outcome(node, pair) -> str:
    """Send one pair and wait until it is fused or counted as a model error."""
    before = node.client.settled_diagnostics()
    fused, errors = int(before["fused"]), int(before.get("errors.model", 0))
    node.client.publish(*pair)
    assert node.client.wait_diagnostics(
        lambda d: int(d["fused"]) > fused or int(d.get("errors.model", 0)) > errors, 60
    ), node.log()[-2000:]
    return "error" if int(node.client.diagnostics.get("errors.model", 0)) > errors else "fused"


def _until_model_error(node, pair) -> list[str]:
    """Send pairs one by one until one is counted as a model error; the outcomes in order."""
    outcomes: list[str] = []
    while "error" not in outcomes:
        assert len(outcomes) < 6, f"no model error after {outcomes}"
        outcomes.append(_outcome(node, mono8_pair(pair, stamp())))
    return outcomes


def test_model_failures_are_skipped_counted_and_fall_back_to_cpu(node, pairs, engine):
    """Injected 'CUDA out of memory' on two forward passes: the first with fallback_to_cpu
    off (counted, stays on the fake CUDA device), the second with it on (moves to the CPU)."""
    assert "fake cuda" in node.diagnostics_after("fused", 1)["device"]
    assert node.client.set_parameters({"fallback_to_cpu": False})[0].successful
    _until_model_error(node, pairs[1])
    values = node.client.diagnostics
    assert values["errors.model"] == "1" and values["fallbacks_to_cpu"] == "0"
    assert "fake cuda" in values["device"]

    assert node.client.set_parameters({"fallback_to_cpu": True})[0].successful
    _until_model_error(node, pairs[1])
    # Each failure skips only its own pair: the next one is fused, now on the CPU.
    fused = node.fuse(*mono8_pair(pairs[1], stamp()))
    np.testing.assert_array_equal(pixels_of(fused), engine.fuse(*pairs[1]))
    values = node.client.diagnostics
    assert values["errors.model"] == str(len(FAILING_PASSES))
    assert values["fallbacks_to_cpu"] == "1"
    assert values["device"] == "cpu"
    assert node.client.get_parameters(["device"])["device"] == "cpu"
    assert node.wait_log("fallback_to_cpu: fusing on the CPU"), node.log()[-2000:]
    logged = [line for line in node.log().splitlines() if "the model failed: CUDA out of" in line]
    assert logged, node.log()[-2000:]
    assert node.process.poll() is None


def test_a_camera_that_stops_and_resumes(node, pairs, engine):
    """RGB alone for a while (thermal camera gone): counted unpaired, then pairs fuse again."""
    unpaired = node.client.settled_counter("unpaired.rgb")
    thermal, rgb = pairs[1]
    for _ in range(10):
        node.client.publish(None, raw_image(rgb, "rgb8", stamp(), FRAME["rgb"]))
        time.sleep(0.1)
    node.diagnostics_after("unpaired.rgb", unpaired + 10)
    fused = node.fuse(*mono8_pair(pairs[1], stamp()))
    np.testing.assert_array_equal(pixels_of(fused), engine.fuse(thermal, rgb))


def test_sigint_when_idle_exits_cleanly(node):
    """Ctrl-C: the worker and loader threads stop (main says so when the worker cannot) and
    the process exits 0 on its own."""
    assert node.client.wait_diagnostics(
        lambda d: (
            int(d["pairs"])
            == int(d["fused"])
            + sum(int(v) for k, v in d.items() if k.startswith(("errors.", "dropped.")))
        ),
        30,
    )
    code = stop_node(node.process, timeout=EXIT_TIMEOUT)
    assert code == 0, f"exit code {code} (None: hung after SIGINT)\n{node.log()[-2000:]}"
    assert "still inside a forward pass" not in node.log()
    assert "Traceback" not in node.log()


# -- a clock that jumps back -------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim_node(tmp_path_factory, weights_path, pairs):
    with running_node(
        tmp_path_factory.mktemp("simtime"),
        "simtime",
        {**PARAMETERS, "weights": str(weights_path), "use_sim_time": True, "max_age": 5.0},
        pairs[0],
    ) as running:
        yield running


def test_bag_replayed_in_a_loop_with_sim_time(sim_node, pairs, engine):
    """/clock runs 1000..1002 s twice (a looped bag): both loops are fused, the jump back is
    seen once and resets the synchronizer, and nothing is dropped as stale."""
    from rosgraph_msgs.msg import Clock

    clock = sim_node.client.node.create_publisher(Clock, "/clock", 10)
    jumps = sim_node.client.counter("clock_jumps")  # sim time stands still: no fresh status
    for loop in range(2):
        for second in range(3):
            # One nanosecond apart per loop, so the client can tell the loops' outputs apart.
            now = (1000 + second) * 1_000_000_000 + loop
            clock.publish(Clock(clock=time_msg(now)))
            time.sleep(0.2)
            fused = sim_node.fuse(*mono8_pair(pairs[1], now))
            np.testing.assert_array_equal(pixels_of(fused), engine.fuse(*pairs[1]))
    values = sim_node.client.diagnostics
    assert int(values["clock_jumps"]) == jumps + 1
    assert values["dropped.stale"] == "0"
    assert sim_node.wait_log("clock jumped back"), sim_node.log()[-2000:]


def test_a_second_sigint_during_shutdown_is_ignored(tmp_path, weights_path, data_dir):
    """A terminal's Ctrl-C reaches the node and ros2 launch forwards one more: the second
    SIGINT lands while close() waits for a forward pass (640×480 in fp32 takes seconds here)
    and must not turn the clean exit into a traceback."""
    import signal

    with running_node(
        tmp_path, "twosigint", {**PARAMETERS, "weights": str(weights_path)}, None
    ) as node:
        big = clip_pairs(data_dir, 1, size=(640, 480))[0]
        node.client.publish(*mono8_pair(big, stamp(0)))
        time.sleep(1.0)  # the worker is inside the forward pass now
        node.process.send_signal(signal.SIGINT)
        time.sleep(0.3)
        node.process.send_signal(signal.SIGINT)
        code = node.process.wait(EXIT_TIMEOUT)
        log = node.log()
    assert code == 0, f"exit code {code}\n{log[-2000:]}"
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log[-2000:]
