"""What the node logs when nothing happens, and when inputs start and stop (over DDS).

An idle node is quiet: rates live in /diagnostics, and the log says only what changed. The
node runs the classic_average backend (no weights, milliseconds per pair): what is tested
is the node's logging, not the network. The node's console output is its log.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from node_harness import mono8_pair, running_node, stamp

from gifnet_ros.ros.stats import QUIET_AFTER, Activity

pytestmark = pytest.mark.dds

PARAMETERS = {
    "backend": "classic_average",
    "device": "cpu",
    "sync.backend": "builtin",
    "diagnostics_period": 0.2,
}
IDLE_STATUSES = 25
"""Diagnostics periods (5 s at 0.2 s) an idle node is watched for."""


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with running_node(tmp_path_factory.mktemp("activity"), "activity", PARAMETERS, None) as run:
        yield run


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (48, 64), np.uint8), rng.integers(0, 256, (48, 64, 3), np.uint8)


def test_an_idle_node_is_quiet(node):
    """Up and publishing diagnostics, nothing received: not one line in the log meanwhile."""
    before = node.log()
    count = node.client.diagnostics_count
    assert node.client.wait_until(
        lambda: node.client.diagnostics_count >= count + IDLE_STATUSES, 60
    )
    assert node.log() == before
    values = node.client.diagnostics
    assert values["thermal_rate_hz"] == values["rgb_rate_hz"] == "0.00"
    assert values["rgb_received"] == "0"


def test_inputs_starting_and_stopping_are_logged_once_each(node, pair):
    """20 pairs at about 10 Hz, then silence: one line when they start, one when they stop,
    nothing per pair or per period in between (drops, if any, are said when they begin and
    end)."""
    lines_before = len(node.log().splitlines())
    for _ in range(20):
        node.client.publish(*mono8_pair(pair, stamp()))
        time.sleep(0.1)
    assert node.wait_log("inputs stopped", 30), node.log()[-2000:]
    count = node.client.diagnostics_count  # a few periods more: nothing else comes
    assert node.client.wait_until(lambda: node.client.diagnostics_count >= count + 10, 30)
    new = node.log().splitlines()[lines_before:]
    # A loaded machine may drop a pair (replaced in the mailbox): said once when drops begin,
    # once when they end, and counted in the diagnostics.
    drops = [line for line in new if "pairs are being dropped" in line or "no pair dropped" in line]
    assert ["no pair dropped" in line for line in drops] == [False, True] * (len(drops) // 2)
    assert len(drops) // 2 <= int(node.client.diagnostics["dropped.replaced"])
    inputs = [line for line in new if line not in drops]
    assert len(inputs) == 2, new
    started, stopped = inputs
    ns = node.namespace
    assert f"receiving {ns}/thermal/image and {ns}/rgb/image" in started
    assert f"inputs stopped: no message on {ns}/thermal/image or {ns}/rgb/image" in stopped
    fused = int(node.client.diagnostics["fused"])
    assert fused > 0 and f"fused {fused} of " in stopped


def _lines(thermal_ticks: range, rgb_ticks: range, ticks: int) -> list[tuple[int, str]]:
    """Activity's lines (with their tick) for inputs counting up over the given ticks of
    0.2 s; no pairs, no drops."""
    empty = {"thermal_in": 0, "rgb_in": 0, "fused": 0, "pairs": 0, "drops": {}}
    activity = Activity({"thermal_in": "thermal", "rgb_in": "rgb"}, empty)
    counts = {"thermal_in": 0, "rgb_in": 0}
    said = []
    for tick in range(ticks):
        counts["thermal_in"] += tick in thermal_ticks
        counts["rgb_in"] += tick in rgb_ticks
        said += [(tick, line) for line in activity.update(tick * 0.2, {**empty, **counts})]
    return said


def test_cameras_starting_and_stopping_a_period_apart_make_one_line_each():
    """Without DDS: the two cameras start one diagnostics period apart and stop one apart;
    the log gets one start line and one stop line, no passing "only one input" line."""
    lines = [line for _, line in _lines(range(5, 20), range(6, 21), 60)]
    assert len(lines) == 2, lines
    assert lines[0] == "receiving thermal and rgb"
    assert lines[1].startswith(f"inputs stopped: no message on thermal or rgb for {QUIET_AFTER:g}")


def test_one_camera_stopping_for_good_is_said_once():
    """Without DDS: RGB stops while thermal goes on: one line says so, QUIET_AFTER after the
    last RGB message (and one period to confirm), and nothing more while that lasts."""
    said = _lines(range(5, 60), range(5, 20), 60)
    assert [line for _, line in said][1:] == [
        "receiving only thermal, nothing on rgb: no pairs to fuse"
    ]
    stopped_tick = said[1][0]
    assert (stopped_tick - 19) * 0.2 >= QUIET_AFTER
