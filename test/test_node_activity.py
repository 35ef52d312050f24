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
    nothing per pair or per period in between."""
    lines_before = len(node.log().splitlines())
    for _ in range(20):
        node.client.publish(*mono8_pair(pair, stamp()))
        time.sleep(0.1)
    assert node.wait_log("inputs stopped", 30), node.log()[-2000:]
    count = node.client.diagnostics_count  # a few periods more: nothing else comes
    assert node.client.wait_until(lambda: node.client.diagnostics_count >= count + 10, 30)
    new = node.log().splitlines()[lines_before:]
    assert len(new) == 2, new
    started, stopped = new
    ns = node.namespace
    assert f"receiving {ns}/thermal/image and {ns}/rgb/image" in started
    assert f"inputs stopped: no message on {ns}/thermal/image or {ns}/rgb/image" in stopped
    fused = int(node.client.diagnostics["fused"])
    assert fused > 0 and f"fused {fused} of " in stopped
