"""The managed (lifecycle) node, driven through its real lifecycle services over DDS.

configure loads the model and creates inputs and outputs, activate starts fusing, deactivate
stops (pairs are counted, not fused), cleanup destroys the outputs and frees the model, and
the cycle can be repeated; the shutdown transition and then Ctrl-C end the process cleanly.
"""

from __future__ import annotations

import numpy as np
import pytest
from node_harness import (
    DOMAIN_ID,
    EXACT,
    EXIT_TIMEOUT,
    clip_pairs,
    dds_env,
    mono8_pair,
    pixels_of,
    stamp,
)

from gifnet_ros.ros.client import FusionClient
from gifnet_ros.ros.node_process import start_node, stop_node

pytestmark = [pytest.mark.dds, pytest.mark.distro, pytest.mark.shared]

PARAMETERS = {**EXACT, "device": "cpu", "sync.backend": "builtin", "diagnostics_period": 0.2}


@pytest.fixture(scope="module")
def pairs(data_dir):
    return clip_pairs(data_dir, 2)


@pytest.fixture(scope="module")
def managed(tmp_path_factory, weights_path):
    """The lifecycle node process (unconfigured) and a client; both stopped after."""
    tmp = tmp_path_factory.mktemp("lifecycle")
    namespace = "/gifnet_test_lifecycle"
    with pytest.MonkeyPatch.context() as patch:
        for key, value in dds_env(tmp).items():
            patch.setenv(key, value)
        log = tmp / "lifecycle.log"
        process = start_node(
            namespace, {**PARAMETERS, "weights": str(weights_path)}, log, lifecycle=True
        )
        client = FusionClient(namespace, domain_id=DOMAIN_ID)
        try:
            yield process, client, log
        finally:
            client.close()
            stop_node(process)


def _state(client) -> str:
    from lifecycle_msgs.srv import GetState

    return client.call(GetState, "get_state", GetState.Request(), timeout=60).current_state.label


def _change(client, transition: int) -> bool:
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    request = ChangeState.Request(transition=Transition(id=transition))
    return client.call(ChangeState, "change_state", request, timeout=120).success


def _send_until_counted(client, pair, key: str) -> None:
    """Send the pair until the node's counter ``key`` goes up (best-effort inputs)."""
    before = client.settled_counter(key)
    for _ in range(5):
        client.publish(*mono8_pair(pair, stamp()))
        if client.wait_diagnostics(lambda d: int(d.get(key, 0)) > before, 5.0):
            return
    pytest.fail(f"{key} never went up: {client.diagnostics}")


def _said(log, text: str) -> int:
    """How many lines of the node's log contain ``text``."""
    return sum(text in line for line in log.read_text().splitlines())


def test_lifecycle_transitions(managed, pairs, engine):
    """Every transition does what it says, and the log says what is true after each: loaded
    but waiting on configure, fusing only once active, not fusing once deactivated."""
    from lifecycle_msgs.msg import Transition

    process, client, log = managed
    assert _state(client) == "unconfigured"
    assert client._fused_sub.get_publisher_count() == 0

    for cycle in range(2):
        assert _change(client, Transition.TRANSITION_CONFIGURE)
        assert _state(client) == "inactive"
        assert _said(log, "configured: model loaded") == cycle + 1
        # No line claims fusing before activation (the only ones are the earlier cycles').
        claims = [
            line
            for line in log.read_text().splitlines()
            if "fusing" in line and "not fusing" not in line
        ]
        assert len(claims) == _said(log, "active: fusing") == cycle, log.read_text()
        client.wait_for_node(60, process)
        # Configured but inactive: pairs arrive and are counted, nothing is fused. (Counters
        # are the process's and run on across cycles.)
        fused = client.settled_counter("fused")
        _send_until_counted(client, pairs[1], "dropped.inactive")
        assert client.counter("fused") == fused

        assert _change(client, Transition.TRANSITION_ACTIVATE)
        assert _state(client) == "active"
        assert _said(log, "active: fusing") == cycle + 1
        fused_stamp = client.warm_up(pairs[1], 60, fmt="png")
        np.testing.assert_array_equal(
            pixels_of(client.fused[fused_stamp][0]), engine.fuse(*pairs[1])
        )

        assert _change(client, Transition.TRANSITION_DEACTIVATE)
        assert _state(client) == "inactive"
        assert _said(log, "inactive: not fusing") == cycle + 1
        fused = client.settled_counter("fused")
        _send_until_counted(client, pairs[1], "dropped.inactive")
        assert client.counter("fused") == fused

        assert _change(client, Transition.TRANSITION_CLEANUP)
        assert _state(client) == "unconfigured"
        assert client.wait_until(lambda: client._fused_sub.get_publisher_count() == 0, 10)
        assert log.read_text().count("model released") == cycle + 1

    assert _change(client, Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
    assert _state(client) == "finalized"
    code = stop_node(process, timeout=EXIT_TIMEOUT)
    assert code == 0, f"exit code {code} (None: hung after SIGINT)"
    assert "Traceback" not in log.read_text()
