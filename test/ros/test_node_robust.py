"""Generated bad messages through the running node over DDS: counted, logged, survived.

One node process per transport (module-scoped), ``align.method none`` so that a thermal image
of another size than the RGB image is an error too. Each generated case is sent as a pair (the
case on its input, a good image on the other, one stamp: now, zero, the previous pair's, or a
minute back), then the node's diagnostics must show exactly one more of the outcome the case
predicts: ``fused``, ``errors.<input>_conversion`` or ``errors.alignment``. At the end a good
pair must still be fused to the engine's result. Cases per run are bounded (DDS round trips
cost ~0.1-1 s each) and printed at the end.
"""

from __future__ import annotations

import numpy as np
import pytest
from bad_input import DEFECTS, RAN, STAMPS, Case, cases, good_compressed, print_counts
from hypothesis import HealthCheck, Phase, given, settings
from node_harness import (
    FRAME,
    SIZE,
    clip_pairs,
    compressed_image,
    mono8_pair,
    pixels_of,
    raw_image,
    running_node,
    stamp,
    time_msg,
)

pytestmark = [pytest.mark.dds, pytest.mark.shared]

RAW_CASES = 45
COMPRESSED_CASES = 12
OUTCOME_KEYS = ("fused", "errors.thermal_conversion", "errors.rgb_conversion", "errors.alignment")
PARAMETERS = {
    "device": "cpu",
    "sync.backend": "builtin",
    "align.method": "none",
    "diagnostics_period": 0.1,
}


@pytest.fixture(scope="module", autouse=True)
def counts(request):
    yield
    print_counts(request, "node")


@pytest.fixture(scope="module")
def pairs(data_dir):
    return clip_pairs(data_dir, 2)


@pytest.fixture(scope="module")
def node(request, tmp_path_factory, weights_path, pairs):
    """One node per transport, torn down before the next starts (both publish the same
    /diagnostics status name, so two at once would mix their counters)."""
    compressed = request.param == "compressed"
    with running_node(
        tmp_path_factory.mktemp("robust"),
        f"robust_{request.param}",
        {**PARAMETERS, "weights": str(weights_path), "compressed": compressed},
        pairs[0],
        transports=("compressed", "compressed") if compressed else ("raw", "raw"),
    ) as running:
        # The warm-up re-sends its pair when the first copy is slow to fuse, and a copy can
        # still be on its way: the first case's baseline must count it. A status built after
        # the warm-up has it among the pairs taken; then wait for its outcome.
        running.client.settled_diagnostics()
        assert running.client.wait_diagnostics(_idle, 60.0), running.client.diagnostics
        yield running


RAW = pytest.mark.parametrize("node", ["raw"], indirect=True)
COMPRESSED = pytest.mark.parametrize("node", ["compressed"], indirect=True)
SETTINGS = {
    "deadline": None,
    "database": None,
    # No shrinking: each step is a DDS round trip; the failing case is printed as it is.
    "phases": (Phase.explicit, Phase.generate),
    "suppress_health_check": [HealthCheck.too_slow],
}


_previous_stamp = {"value": stamp()}


def _stamp_for(kind: str) -> int:
    previous = _previous_stamp["value"]
    value = {
        "now": stamp(),
        "zero": 0,
        "equal_previous": previous,
        "backwards": previous - 60_000_000_000,
    }[kind]
    _previous_stamp["value"] = value
    return value


def _message(case: Case, stamp_ns: int, compressed: bool) -> object:
    from sensor_msgs.msg import CompressedImage, Image

    frame = FRAME[case.role]
    if compressed and case.compressed_format is None:  # a valid image for a compressed input
        assert case.pixels is not None
        return compressed_image(good_compressed(case.pixels), "png", stamp_ns, frame)
    kind = CompressedImage if case.compressed_format is not None else Image
    msg = kind(**case.fields())
    msg.header.stamp = time_msg(stamp_ns)
    msg.header.frame_id = frame
    return msg


def _outcomes(values: dict[str, str]) -> dict[str, int]:
    return {key: int(values.get(key, 0)) for key in OUTCOME_KEYS}


def _drops(values: dict[str, str]) -> int:
    return sum(int(v) for k, v in values.items() if k.startswith("dropped."))


def _idle(values: dict[str, str]) -> bool:
    """Every pair the node took has an outcome: nothing is in the worker or its mailbox."""
    return bool(values) and int(values["pairs"]) == sum(_outcomes(values).values()) + _drops(values)


def _send_and_check(node, case: Case, good: tuple[np.ndarray, np.ndarray], compressed: bool):
    """Send the case with a good partner; only the predicted counter may go up, by one for
    each pair the node took (one, or two when a resend's first copy was late, not lost)."""
    assert node.client.wait_diagnostics(_idle, 60.0), node.client.diagnostics
    before = _outcomes(node.client.diagnostics)
    stamp_ns = _stamp_for(case.stamp)
    thermal, rgb = good
    if case.role == "thermal":
        pair = (_message(case, stamp_ns, compressed), None)
        partner = Case("rgb", "none", "ok", pixels=rgb)
    else:
        pair = (None, _message(case, stamp_ns, compressed))
        partner = Case("thermal", "none", "ok", pixels=thermal)
    if compressed:
        partner_msg = compressed_image(
            good_compressed(partner.pixels), "png", stamp_ns, FRAME[partner.role]
        )
    else:
        encoding = "rgb8" if partner.role == "rgb" else "mono8"
        partner_msg = raw_image(partner.pixels, encoding, stamp_ns, FRAME[partner.role])
    pair = (pair[0] or partner_msg, pair[1] or partner_msg)

    def settled(values: dict[str, str]) -> bool:
        return _idle(values) and sum(_outcomes(values).values()) > sum(before.values())

    # Best-effort inputs: resend if the node did not get this pair (its pair counter says so).
    for _ in range(3):
        pairs_before = node.client.counter("pairs")
        node.client.publish(*pair)
        if node.client.wait_diagnostics(lambda d, p=pairs_before: int(d["pairs"]) > p, 15.0):
            break
    assert node.client.wait_diagnostics(settled, 60.0), (case.describe(), node.log()[-2000:])
    after = _outcomes(node.client.diagnostics)
    expected_key = {
        "ok": "fused",
        "conversion": f"errors.{case.role}_conversion",
        "alignment": "errors.alignment",
    }[case.expected]
    delta = {key: after[key] - before[key] for key in OUTCOME_KEYS}
    # Idle before and after, so every pair the node took meanwhile and did not drop for a
    # newer one has an outcome: all of them must be the case's.
    taken = sum(delta.values())
    assert taken >= 1, (case.describe(), delta)
    assert delta == {key: taken * int(key == expected_key) for key in OUTCOME_KEYS}, (
        case.describe(),
        delta,
    )
    RAN[f"node {case.expected}"] += taken


def _still_fuses(node, pair, engine) -> None:
    assert node.process.poll() is None
    fused = node.fuse(*mono8_pair(pair, stamp()))
    np.testing.assert_array_equal(pixels_of(fused), engine.fuse(*pair))


RAW_DEFECTS = tuple(d for d in DEFECTS if d != "garbage_compressed")


@RAW
@settings(max_examples=RAW_CASES, **SETTINGS)
@given(cases(size=SIZE, defects=RAW_DEFECTS, stamps=STAMPS))
def test_generated_raw_messages_are_each_accounted_for(node, pairs, case):
    _send_and_check(node, case, pairs[1], compressed=False)


@RAW
def test_raw_node_fuses_after_the_generated_batch(node, pairs, engine):
    """The totals match the cases sent, the log is throttled, and a good pair still fuses."""
    ran = dict(RAN)
    assert ran.get("node conversion", 0) > 0, "the generated batch did not run first"
    _still_fuses(node, pairs[1], engine)
    values = node.client.diagnostics
    conversion = int(values.get("errors.thermal_conversion", 0)) + int(
        values.get("errors.rgb_conversion", 0)
    )
    assert conversion == ran["node conversion"]
    assert int(values.get("errors.alignment", 0)) == ran.get("node alignment", 0)
    assert node.wait_log("image skipped", 5.0), node.log()[-2000:]
    logged = [line for line in node.log().splitlines() if "image skipped" in line]
    assert 1 <= len(logged) <= conversion  # one line per error at most: throttled, one-line


@COMPRESSED
@settings(max_examples=COMPRESSED_CASES, **SETTINGS)
@given(cases(size=SIZE, defects=("garbage_compressed", "none"), stamps=STAMPS))
def test_generated_compressed_messages_are_each_accounted_for(node, pairs, case):
    _send_and_check(node, case, pairs[1], compressed=True)


@COMPRESSED
def test_compressed_node_fuses_after_the_generated_batch(node, pairs, engine):
    assert node.wait_log("could not decode", 5.0), node.log()[-2000:]
    thermal, rgb = pairs[1]
    now = stamp()
    fused = node.fuse(
        compressed_image(good_compressed(thermal), "png", now, FRAME["thermal"]),
        compressed_image(good_compressed(rgb), "png", now, FRAME["rgb"]),
    )
    np.testing.assert_array_equal(pixels_of(fused), engine.fuse(thermal, rgb))
