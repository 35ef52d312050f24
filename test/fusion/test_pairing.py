"""Stamp pairing: offline rule against a brute force, its properties, and the online pairer."""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gifnet_ros.fusion.pairing import PairingResult, StampPairer, pair_by_stamp

MS = 1_000_000


def brute_force(thermal: list[int], rgb: list[int], slop: int) -> set[tuple[int, int]]:
    """The documented rule taken literally: all edges within slop, sorted by key, greedy;
    (thermal index, RGB index) pairs."""
    edges = sorted(
        (abs(t - r), r, t, i, j)
        for i, r in enumerate(rgb)
        for j, t in enumerate(thermal)
        if abs(t - r) <= slop
    )
    used_rgb: set[int] = set()
    used_thermal: set[int] = set()
    pairs = set()
    for _, _, _, i, j in edges:
        if i not in used_rgb and j not in used_thermal:
            used_rgb.add(i)
            used_thermal.add(j)
            pairs.add((j, i))
    return pairs


def check_invariants(result: PairingResult, thermal: list[int], rgb: list[int], slop: int):
    """Properties any valid result has, independent of how it was computed."""
    thermal_used = [t for t, _ in result.pairs]
    rgb_used = [r for _, r in result.pairs]
    assert len(set(rgb_used)) == len(rgb_used), "an RGB message used twice"
    assert len(set(thermal_used)) == len(thermal_used), "a thermal message used twice"
    assert sorted(rgb_used + list(result.unpaired_rgb)) == list(range(len(rgb)))
    assert sorted(thermal_used + list(result.unpaired_thermal)) == list(range(len(thermal)))
    assert len(result.pairs) + len(result.unpaired_rgb) == len(rgb)
    assert len(result.pairs) + len(result.unpaired_thermal) == len(thermal)
    assert rgb_used == sorted(rgb_used)  # in the order of the RGB index
    for (t, r), diff in zip(result.pairs, result.differences_ns, strict=True):
        assert diff == thermal[t] - rgb[r]
        assert abs(diff) <= slop
    # Stability: no RGB and thermal message within slop both prefer each other to their lot.
    rgb_partner = {r: t for t, r in result.pairs}
    thermal_partner = dict(result.pairs)

    def key(i: int, j: int) -> tuple[int, ...]:
        return (abs(thermal[j] - rgb[i]), rgb[i], thermal[j], i, j)

    for i in range(len(rgb)):
        for j in range(len(thermal)):
            if abs(thermal[j] - rgb[i]) > slop or rgb_partner.get(i) == j:
                continue
            rgb_happier = i in rgb_partner and key(i, rgb_partner[i]) < key(i, j)
            thermal_happier = j in thermal_partner and key(thermal_partner[j], j) < key(i, j)
            assert rgb_happier or thermal_happier, f"unstable: rgb {i} and thermal {j}"


# Small stamp ranges make ties and duplicates common, which is where rules go wrong.
stamps = st.lists(st.integers(0, 60), max_size=14)
slops = st.integers(0, 25)


@given(stamps, stamps, slops)
@settings(max_examples=400, deadline=None)
def test_matches_brute_force_and_invariants(rgb, thermal, slop):
    result = pair_by_stamp(thermal, rgb, slop)
    assert set(result.pairs) == brute_force(thermal, rgb, slop)
    check_invariants(result, thermal, rgb, slop)


@given(stamps, stamps, slops, st.randoms(use_true_random=False))
@settings(max_examples=200, deadline=None)
def test_paired_stamps_do_not_depend_on_input_order(rgb, thermal, slop, rnd):
    """The documented claim: permuting inputs changes indices, not which stamps pair."""
    rgb_perm, thermal_perm = rgb[:], thermal[:]
    rnd.shuffle(rgb_perm)
    rnd.shuffle(thermal_perm)
    a = pair_by_stamp(thermal, rgb, slop)
    b = pair_by_stamp(thermal_perm, rgb_perm, slop)
    assert sorted((thermal[t], rgb[r]) for t, r in a.pairs) == sorted(
        (thermal_perm[t], rgb_perm[r]) for t, r in b.pairs
    )
    assert sorted(rgb[i] for i in a.unpaired_rgb) == sorted(rgb_perm[i] for i in b.unpaired_rgb)
    assert pair_by_stamp(thermal, rgb, slop) == a  # and repeatable


def camera(n: int, period: int, offset: int, jitter: int, rnd: random.Random) -> list[int]:
    """Frame k at k * period + offset, plus uniform jitter in [-jitter, jitter]."""
    return [k * period + offset + rnd.randint(-jitter, jitter) for k in range(n)]


@given(
    n=st.integers(1, 60),
    offset_ms=st.integers(-8, 8),
    jitter_ms=st.integers(0, 3),
    drop_rgb=st.sets(st.integers(0, 59)),
    drop_thermal=st.sets(st.integers(0, 59)),
    dup_thermal=st.sets(st.integers(0, 59)),
    seed=st.integers(0, 2**32),
)
@settings(max_examples=200, deadline=None)
def test_recovers_frame_correspondence(
    n, offset_ms, jitter_ms, drop_rgb, drop_thermal, dup_thermal, seed
):
    """30 Hz cameras with offset, jitter, dropped and duplicated frames: frame k pairs with
    frame k whenever both exist, since |offset| + 2 jitter < slop < period - that."""
    rnd = random.Random(seed)
    period = 33 * MS
    rgb_all = camera(n, period, 0, jitter_ms * MS, rnd)
    thermal_all = camera(n, period, offset_ms * MS, jitter_ms * MS, rnd)
    rgb_frames = [k for k in range(n) if k not in drop_rgb]
    thermal_frames = []
    for k in range(n):
        if k not in drop_thermal:
            thermal_frames += [k, k] if k in dup_thermal else [k]  # a re-sent message
    rgb = [rgb_all[k] for k in rgb_frames]
    thermal = [thermal_all[k] for k in thermal_frames]
    slop = 15 * MS
    result = pair_by_stamp(thermal, rgb, slop)
    check_invariants(result, thermal, rgb, slop)
    paired_frames = {(thermal_frames[t], rgb_frames[r]) for t, r in result.pairs}
    both = sorted(set(rgb_frames) & set(thermal_frames))
    assert paired_frames == {(k, k) for k in both}
    # The first of a duplicated pair of thermal messages is the one used.
    for t, _ in result.pairs:
        assert thermal_frames.index(thermal_frames[t]) == t
    assert sorted(rgb_frames[i] for i in result.unpaired_rgb) == sorted(set(rgb_frames) - set(both))


def test_nearest_first_beats_sequential_greedy():
    """RGB 0 would take thermal 9 if RGB messages chose in turn; RGB 10 is nearer."""
    result = pair_by_stamp([9], [0, 10], 10)
    assert result.pairs == ((0, 1),)
    assert result.unpaired_rgb == (0,)


def test_ties_follow_the_documented_order():
    # Equal distance for one RGB: the earlier thermal stamp wins.
    assert pair_by_stamp([15, 5], [10], 5).pairs == ((1, 0),)
    # Equal distance for one thermal: the earlier RGB stamp wins.
    assert pair_by_stamp([10], [15, 5], 5).pairs == ((0, 1),)
    # Identical stamps: lower indices first.
    assert pair_by_stamp([7], [7, 7], 0).pairs == ((0, 0),)
    assert pair_by_stamp([7, 7], [7], 0).pairs == ((0, 0),)
    # Exactly at the slop pairs; one past does not.
    assert pair_by_stamp([0], [5], 5).pairs == ((0, 0),)
    assert pair_by_stamp([0], [6], 5).pairs == ()


def test_empty_and_invalid_inputs():
    assert pair_by_stamp([], [], 0) == PairingResult((), (), (), ())
    assert pair_by_stamp([], [1, 2], 5).unpaired_rgb == (0, 1)
    assert pair_by_stamp([1, 2], [], 5).unpaired_thermal == (0, 1)
    with pytest.raises(ValueError, match="slop_ns"):
        pair_by_stamp([1], [1], -1)
    with pytest.raises(ValueError, match="integer nanoseconds"):
        pair_by_stamp([1.5], [1], 1)


def test_large_input_matches_frame_correspondence():
    """100k messages per stream (O(n log n) matters here: an all-pairs rule would not end)."""
    rnd = random.Random(1)
    n = 100_000
    rgb = camera(n, 33 * MS, 0, 2 * MS, rnd)
    thermal = camera(n, 33 * MS, 4 * MS, 2 * MS, rnd)
    rnd.shuffle(thermal)  # unsorted input is allowed
    result = pair_by_stamp(thermal, rgb, 12 * MS)
    assert len(result.pairs) == n
    assert all(abs(d - 4 * MS) <= 4 * MS for d in result.differences_ns)


# --- online -------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.pairs: list[tuple[int, int]] = []

    def __call__(self, thermal_msg, rgb_msg) -> None:
        self.pairs.append((thermal_msg, rgb_msg))


sorted_stamps = st.lists(st.integers(0, 80), max_size=14).map(sorted)


@given(sorted_stamps, sorted_stamps, st.integers(0, 25), st.data())
# A message exactly one slop behind the other stream must wait: a repeated stamp can still come.
@example([0, 5], [5, 5], 5, None).via("a duplicate arrives exactly at the slop")
@settings(max_examples=400, deadline=None)
def test_online_equals_offline_for_streams_in_stamp_order(rgb, thermal, slop, data):
    """The documented equivalence: each stream in stamp order, any interleaving, no overflow."""
    if data is None:
        order = ["r", "r", "t", "t"]
    else:
        order = data.draw(st.permutations(["r"] * len(rgb) + ["t"] * len(thermal)))
    rec = Recorder()
    # slop in seconds: the stamps here are small integers, so scale them to whole ns.
    pairer = StampPairer(slop * 1e-9, queue_size=100, callback=rec)
    it_rgb, it_thermal = iter(enumerate(rgb)), iter(enumerate(thermal))
    for stream in order:
        if stream == "r":
            i, stamp = next(it_rgb)
            pairer.add_rgb(i, stamp)
        else:
            j, stamp = next(it_thermal)
            pairer.add_thermal(j, stamp)
    pairer.flush()
    offline = pair_by_stamp(thermal, rgb, slop)
    assert sorted(rec.pairs, key=lambda pair: pair[1]) == list(offline.pairs)
    assert len(set(rec.pairs)) == len(rec.pairs)
    assert pairer.dropped_rgb == len(offline.unpaired_rgb)
    assert pairer.dropped_thermal == len(offline.unpaired_thermal)
    assert pairer.overflowed == 0 and pairer.resets == 0


def test_online_emits_without_flush_in_a_steady_stream():
    """Offset cameras: each pair is out once the next frame of the other stream arrives."""
    rec = Recorder()
    pairer = StampPairer(0.010, queue_size=5, callback=rec)
    for k in range(10):
        pairer.add_rgb(k, k * 33 * MS)
        pairer.add_thermal(k, k * 33 * MS + 3 * MS)
    assert rec.pairs == [(k, k) for k in range(9)]
    assert pairer.dropped == 0


def test_online_identical_stamps_pair_immediately():
    rec = Recorder()
    pairer = StampPairer(0.010, queue_size=5, callback=rec)
    pairer.add_rgb("r", 5 * MS)
    assert rec.pairs == []
    pairer.add_thermal("t", 5 * MS)
    assert rec.pairs == [("t", "r")]


def test_online_queue_overflow_evicts_oldest():
    """A silent thermal camera: RGB messages pile up to queue_size, the oldest go first."""
    rec = Recorder()
    pairer = StampPairer(0.010, queue_size=3, callback=rec)
    for k in range(8):
        pairer.add_rgb(k, k * 33 * MS)
    assert pairer.overflowed == 5
    assert pairer.dropped_rgb == 5
    pairer.add_thermal("t", 7 * 33 * MS)
    assert rec.pairs == [("t", 7)]


def test_online_expires_messages_that_cannot_pair():
    rec = Recorder()
    pairer = StampPairer(0.010, queue_size=10, callback=rec)
    pairer.add_rgb("r0", 0)
    pairer.add_thermal("t0", 100 * MS)  # too far from r0, and later thermals are further
    assert pairer.dropped_rgb == 1
    pairer.add_rgb("r1", 100 * MS)
    assert rec.pairs == [("t0", "r1")]


def test_online_backwards_jump_resets():
    """A looping bag: stamps restart, the queues are cleared and pairing starts afresh."""
    rec = Recorder()
    pairer = StampPairer(0.010, queue_size=10, callback=rec, backwards_reset=1.0)
    pairer.add_rgb("old_r", 50 * 10**9)
    pairer.add_rgb("new_r", 0)
    assert pairer.resets == 1
    assert pairer.dropped_rgb == 1
    pairer.add_thermal("new_t", 0)
    assert rec.pairs == [("new_t", "new_r")]
    # A small reordering (less than the threshold) is accepted without reset.
    pairer.add_rgb("late", -100 * MS)
    assert pairer.resets == 1


def test_online_reset_and_parameter_errors():
    rec = Recorder()
    pairer = StampPairer(0.010, queue_size=4, callback=rec)
    pairer.add_rgb("r", 0)
    pairer.add_thermal("t", 5 * MS)
    pairer.reset()
    assert pairer.dropped == 2
    pairer.flush()
    assert rec.pairs == []
    with pytest.raises(ValueError, match="slop"):
        StampPairer(-0.1, 4, rec)
    with pytest.raises(ValueError, match="queue_size"):
        StampPairer(0.1, 0, rec)
    with pytest.raises(ValueError, match="backwards_reset"):
        StampPairer(0.1, 4, rec, backwards_reset=0)


def test_configure_drops_and_counts_the_queue_and_applies_the_new_rules():
    """A slop change at run time: what is queued is dropped and counted, the counters carry on,
    and the next messages are paired under the new slop and queue size."""
    rec = Recorder()
    pairer = StampPairer(0.010, queue_size=4, callback=rec)
    pairer.add_rgb("r0", 0)
    pairer.add_rgb("r1", 33 * MS)
    pairer.configure(0.030, 2)
    assert pairer.dropped_rgb == 2 and rec.pairs == []
    pairer.add_rgb("r2", 100 * MS)
    pairer.add_thermal("t2", 120 * MS)  # 20 ms apart: only a pair under the new 30 ms slop
    pairer.add_rgb("r3", 200 * MS)
    pairer.add_thermal("t3", 200 * MS)
    assert rec.pairs == [("t2", "r2"), ("t3", "r3")]
    for k in range(4):  # the new queue size: two RGB messages at most
        pairer.add_rgb(k, (300 + 33 * k) * MS)
    assert pairer.overflowed == 2 and pairer.dropped_rgb == 4
    with pytest.raises(ValueError, match="slop"):
        pairer.configure(-1.0, 2)
    with pytest.raises(ValueError, match="queue_size"):
        pairer.configure(0.01, 0)


def test_online_is_thread_safe():
    """Two producer threads (like two executor callback threads): every message once."""
    rec = Recorder()
    lock = threading.Lock()

    def callback(thermal_msg, rgb_msg):
        with lock:
            rec(thermal_msg, rgb_msg)

    pairer = StampPairer(0.010, queue_size=5000, callback=callback)
    n = 1000

    def feed(add):
        for k in range(n):
            add(k, k * 33 * MS)

    threads = [
        threading.Thread(target=feed, args=(pairer.add_rgb,)),
        threading.Thread(target=feed, args=(pairer.add_thermal,)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pairer.flush()
    assert sorted(rec.pairs) == [(k, k) for k in range(n)]
    assert pairer.dropped == 0
