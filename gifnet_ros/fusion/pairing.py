"""Pair thermal and RGB messages by header stamp, offline (whole bag) and online (live node).

Thermal comes first throughout, as in the rest of the package: in the arguments, in the index
pairs of a result and in the callback.

The pairing rule
----------------
Every RGB message may be paired with a thermal message whose stamp differs by at most the slop
(inclusive), and every message is used at most once. Among the allowed (RGB, thermal) edges,
pairs are chosen greedily, *globally nearest first*: edges are taken in increasing order of the
key ``(|thermal_stamp - rgb_stamp|, rgb_stamp, thermal_stamp, rgb_index, thermal_index)``, and an
edge is taken when neither of its messages has been taken yet. So each RGB message gets the
nearest thermal message that is still free once every closer pair has been settled; a conflict
(two RGB messages wanting the same thermal message) goes to the closer one; an exact tie in
distance goes to the earlier RGB stamp, then to the earlier thermal stamp, and among messages
with identical stamps to the lower index (the earlier message in its stream). Because the key is
a strict total order, the result is also the unique *stable* matching: there is no RGB message
and thermal message within the slop that would both rather be paired with each other than with
what they got. It depends on the stamps alone, so permuting the input lists changes only which
of several identical-stamp messages is used, never which stamps are paired.

Why this rule rather than "each RGB in turn takes its nearest free thermal": the sequential rule
lets an early RGB message steal the thermal frame that belongs to the next RGB frame when the two
cameras are offset by about half a period, which then cascades through the whole recording;
nearest-first cannot do that.

``pair_by_stamp`` computes it in O(n log n): the closest remaining RGB/thermal pair is always
adjacent in stamp order once messages with equal stamps and stream are grouped, so a heap of
adjacent pairs over a linked list of stamp groups suffices (no all-pairs edge list, which would
be quadratic for many identical stamps or a large slop).

``StampPairer`` is the live node's fallback when ``message_filters`` is not installed. It applies
the same rule incrementally and emits a pair only once no later message can change it.
"""

from __future__ import annotations

import heapq
import threading
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

_RGB = 0
_THERMAL = 1


@dataclass(frozen=True)
class PairingResult:
    """Outcome of ``pair_by_stamp``; indices refer to the input sequences.

    ``pairs`` holds (thermal index, RGB index) in the order of the RGB index (the order the
    bag tool writes them in); ``differences_ns[k]`` is ``thermal_stamp - rgb_stamp`` of
    ``pairs[k]``. ``unpaired_thermal`` and ``unpaired_rgb`` are sorted indices.
    """

    pairs: tuple[tuple[int, int], ...]
    unpaired_thermal: tuple[int, ...]
    unpaired_rgb: tuple[int, ...]
    differences_ns: tuple[int, ...]


def _as_stamps(stamps: Iterable[int], name: str) -> list[int]:
    """Plain ints (numpy scalars would make the heap keys slow and overflow-prone)."""
    out = []
    for value in stamps:
        as_int = int(value)
        if as_int != value:
            raise ValueError(f"{name} must be integer nanoseconds, got {value!r}")
        out.append(as_int)
    return out


def pair_by_stamp(
    thermal_stamps_ns: Iterable[int], rgb_stamps_ns: Iterable[int], slop_ns: int
) -> PairingResult:
    """Pair thermal with RGB messages by stamp with the module's nearest-first rule.

    Stamps need not be sorted or unique. ``slop_ns`` is the largest allowed absolute stamp
    difference (inclusive).
    """
    thermal = _as_stamps(thermal_stamps_ns, "thermal_stamps_ns")
    rgb = _as_stamps(rgb_stamps_ns, "rgb_stamps_ns")
    slop = int(slop_ns)
    if slop < 0:
        raise ValueError(f"slop_ns must be >= 0, got {slop_ns!r}")

    # One node per (stamp, stream) group; its messages are interchangeable at the stamp level
    # and are handed out lowest index first, which is what the tie-break on index prescribes.
    groups: dict[tuple[int, int], deque[int]] = {}
    for kind, stamps in ((_RGB, rgb), (_THERMAL, thermal)):
        for index, stamp in enumerate(stamps):
            groups.setdefault((stamp, kind), deque()).append(index)
    # Sorted by stamp (either stream first at equal stamps): with at most one group per
    # stream and stamp, the best remaining edge always joins neighbours in this order, since
    # any group between its ends would form a strictly closer edge with one of them.
    order = sorted(groups)
    members = [groups[key] for key in order]
    count = len(order)
    nxt = list(range(1, count + 1))
    prv = list(range(-1, count - 1))
    alive = [True] * count
    heap: list[tuple[int, int, int, int, int]] = []

    def push(left: int, right: int) -> None:
        """Queue the edge between neighbouring groups if it joins the two streams within slop."""
        if left < 0 or right >= count:
            return
        (stamp_l, kind_l), (stamp_r, kind_r) = order[left], order[right]
        if kind_l == kind_r or stamp_r - stamp_l > slop:
            return
        rgb_stamp, thermal_stamp = (stamp_l, stamp_r) if kind_l == _RGB else (stamp_r, stamp_l)
        heapq.heappush(heap, (stamp_r - stamp_l, rgb_stamp, thermal_stamp, left, right))

    for node in range(count - 1):
        push(node, node + 1)

    pairs: list[tuple[int, int]] = []  # (thermal index, RGB index)
    while heap:
        _, _, _, left, right = heapq.heappop(heap)
        if not (alive[left] and alive[right] and nxt[left] == right):
            continue  # stale: one side used up, or something now lies between them
        rgb_node, thermal_node = (left, right) if order[left][1] == _RGB else (right, left)
        rgb_q, thermal_q = members[rgb_node], members[thermal_node]
        for _ in range(min(len(rgb_q), len(thermal_q))):
            pairs.append((thermal_q.popleft(), rgb_q.popleft()))
        for node in (left, right):
            if not members[node]:
                alive[node] = False
                before, after = prv[node], nxt[node]
                if before >= 0:
                    nxt[before] = after
                if after < count:
                    prv[after] = before
                push(before, after)

    pairs.sort(key=lambda pair: pair[1])  # RGB indices are unique: a total order
    paired_thermal = {t for t, _ in pairs}
    paired_rgb = {r for _, r in pairs}
    return PairingResult(
        pairs=tuple(pairs),
        unpaired_thermal=tuple(i for i in range(len(thermal)) if i not in paired_thermal),
        unpaired_rgb=tuple(i for i in range(len(rgb)) if i not in paired_rgb),
        differences_ns=tuple(thermal[t] - rgb[r] for t, r in pairs),
    )


def _checked_rules(slop: float, queue_size: int) -> tuple[int, int]:
    """(slop in ns, queue size) after checking them; ValueError says which is wrong."""
    if not slop >= 0:
        raise ValueError(f"slop must be >= 0 seconds, got {slop!r}")
    if int(queue_size) != queue_size or queue_size < 1:
        raise ValueError(f"queue_size must be a positive integer, got {queue_size!r}")
    return round(slop * 1e9), int(queue_size)


class _StampQueue:
    """The live pairer's queued messages of one stream, sorted by (stamp, arrival index)."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, int]] = []
        self.messages: dict[int, Any] = {}
        self.arrivals = 0
        self.latest: int | None = None  # highest stamp seen since the last reset
        self.dropped = 0

    def add(self, msg: Any, stamp: int) -> None:
        insort(self.keys, (stamp, self.arrivals))
        self.messages[self.arrivals] = msg
        self.arrivals += 1
        self.latest = stamp if self.latest is None else max(self.latest, stamp)

    def remove(self, key: tuple[int, int]) -> Any:
        self.keys.remove(key)
        return self.messages.pop(key[1])

    def drop(self, key: tuple[int, int]) -> None:
        self.remove(key)
        self.dropped += 1

    def drop_all(self) -> None:
        """Drop (and count) every queued message."""
        for key in list(self.keys):
            self.drop(key)

    def nearest(self, stamp: int) -> tuple[int, int] | None:
        """The queued key nearest to ``stamp``; ties go to the lower stamp, then lower index."""
        keys = self.keys
        if not keys:
            return None
        pos = bisect_left(keys, (stamp, -1))
        best = None
        if pos > 0:  # the highest stamp below; take the first message carrying that stamp
            below_stamp = keys[pos - 1][0]
            best = keys[bisect_left(keys, (below_stamp, -1))]
        if pos < len(keys) and (best is None or keys[pos][0] - stamp < stamp - best[0]):
            best = keys[pos]
        return best


class StampPairer:
    """Online pairing with the offline rule of this module, for the node without message_filters.

    Messages are queued per stream (at most ``queue_size`` each; when full, the oldest by stamp
    is evicted and counted in ``dropped`` and ``overflowed``). After every arrival the globally
    nearest queued pair within ``slop`` is emitted as soon as it is *final*: the RGB message has
    been overtaken by the thermal stream, and the thermal message by the RGB stream, by at least
    their stamp difference, so no later message can be closer to either. A queued message is
    dropped (counted in ``dropped``) once nothing queued is within slop and the other stream has
    moved more than the slop past it.

    Equivalence with ``pair_by_stamp``: if within each stream the stamps arrive in non-decreasing
    order (the two streams may interleave in any way), no queue overflowed and no reset happened,
    then the pairs emitted, followed by those of ``flush()``, are exactly
    ``pair_by_stamp(thermal stamps in arrival order, RGB stamps in arrival order, slop)``, with
    indices counted per stream from the last reset.

    Latency: a pair with stamp difference d is emitted once both streams have reached a stamp d
    past the later of its two messages, so hardware-synchronised stamps (d = 0) pass at once and
    offset cameras wait up to one frame of the other stream (as message_filters'
    ApproximateTime policy does for the same reason).

    A stamp more than ``backwards_reset`` seconds older than the newest of its stream (a bag
    played in a loop, a simulated clock restarted) resets both queues first: the queued messages
    are counted as dropped, ``resets`` is incremented, and pairing starts afresh. Smaller
    reorderings are accepted but void the equivalence guarantee.

    ``callback(thermal_msg, rgb_msg)`` takes thermal first, like the node's message_filters
    registration ``[thermal, rgb]``. It is called outside the lock, so a slow fusion does not
    block other callback threads from queueing; with several threads, pairs may therefore reach
    the callback in a different order than they were decided.
    """

    def __init__(
        self,
        slop: float,
        queue_size: int,
        callback: Callable[[Any, Any], None],
        *,
        backwards_reset: float = 1.0,
    ) -> None:
        if not backwards_reset > 0:
            raise ValueError(f"backwards_reset must be > 0 seconds, got {backwards_reset!r}")
        self.slop_ns, self.queue_size = _checked_rules(slop, queue_size)
        self.backwards_reset_ns = round(backwards_reset * 1e9)
        self._callback = callback
        self._lock = threading.Lock()
        self._thermal = _StampQueue()
        self._rgb = _StampQueue()
        self.overflowed = 0
        self.resets = 0

    def configure(self, slop: float, queue_size: int) -> None:
        """New slop and queue size for the messages to come. What is queued is dropped (and
        counted) rather than re-sorted under the new rules; the counters carry on."""
        rules = _checked_rules(slop, queue_size)
        with self._lock:
            self._reset_locked()
            self.slop_ns, self.queue_size = rules

    @property
    def dropped_rgb(self) -> int:
        """RGB messages discarded unpaired (no partner possible, evicted, or reset)."""
        return self._rgb.dropped

    @property
    def dropped_thermal(self) -> int:
        """Thermal messages discarded unpaired (no partner possible, evicted, or reset)."""
        return self._thermal.dropped

    @property
    def dropped(self) -> int:
        """All messages discarded unpaired, both streams."""
        return self._rgb.dropped + self._thermal.dropped

    def add_thermal(self, msg: Any, stamp_ns: int) -> None:
        """Queue a thermal message; may call the callback with the pairs it completes."""
        self._add(self._thermal, msg, int(stamp_ns))

    def add_rgb(self, msg: Any, stamp_ns: int) -> None:
        """Queue an RGB message; may call the callback with the pairs it completes."""
        self._add(self._rgb, msg, int(stamp_ns))

    def reset(self) -> None:
        """Forget everything queued (counted as dropped); stream indices restart at zero."""
        with self._lock:
            self._reset_locked()

    def flush(self) -> None:
        """Pair what is queued as if both streams had ended, drop the rest, and emit.

        For shutdown or the end of a recording, where no later message will arrive to make the
        last pairs final.
        """
        with self._lock:
            ready = []
            while (edge := self._best_edge()) is not None:
                ready.append(self._take(edge))
            for stream in (self._rgb, self._thermal):
                stream.drop_all()
        self._emit(ready)

    def _reset_locked(self) -> None:
        for stream in (self._rgb, self._thermal):
            stream.drop_all()
            stream.arrivals = 0
            stream.latest = None

    def _add(self, stream: _StampQueue, msg: Any, stamp: int) -> None:
        with self._lock:
            if stream.latest is not None and stream.latest - stamp > self.backwards_reset_ns:
                self._reset_locked()
                self.resets += 1
            stream.add(msg, stamp)
            ready = []
            while (edge := self._best_edge()) is not None and self._is_final(edge):
                ready.append(self._take(edge))
            self._expire()
            while len(stream.keys) > self.queue_size:
                stream.drop(stream.keys[0])
                self.overflowed += 1
        self._emit(ready)

    def _best_edge(self) -> tuple[int, int, int, int, int] | None:
        """The queued edge with the smallest pairing key, as that key, or None."""
        best = None
        for rgb_key in self._rgb.keys:
            thermal_key = self._thermal.nearest(rgb_key[0])
            if thermal_key is None:
                return None
            distance = abs(thermal_key[0] - rgb_key[0])
            if distance > self.slop_ns:
                continue
            edge = (distance, rgb_key[0], thermal_key[0], rgb_key[1], thermal_key[1])
            if best is None or edge < best:
                best = edge
        return best

    def _is_final(self, edge: tuple[int, int, int, int, int]) -> bool:
        """No future message (later in its own stream) can form a better edge with either end."""
        distance, rgb_stamp, thermal_stamp, _, _ = edge
        # A later thermal message has stamp >= thermal.latest: if that is at least `distance`
        # past the RGB stamp it cannot be closer, and at equal distance it loses the tie
        # (higher stamp or, at the same stamp, higher index). Likewise for the thermal side.
        latest_thermal, latest_rgb = self._thermal.latest, self._rgb.latest
        assert latest_thermal is not None and latest_rgb is not None
        return latest_thermal - rgb_stamp >= distance and latest_rgb - thermal_stamp >= distance

    def _take(self, edge: tuple[int, int, int, int, int]) -> tuple[Any, Any]:
        _, rgb_stamp, thermal_stamp, rgb_index, thermal_index = edge
        rgb_msg = self._rgb.remove((rgb_stamp, rgb_index))
        thermal_msg = self._thermal.remove((thermal_stamp, thermal_index))
        return thermal_msg, rgb_msg

    def _expire(self) -> None:
        """Drop messages nothing queued can pair with and nothing later can reach."""
        for stream, other in ((self._rgb, self._thermal), (self._thermal, self._rgb)):
            if other.latest is None:
                continue
            for key in list(stream.keys):
                if other.latest - key[0] <= self.slop_ns:
                    break  # keys are sorted: this and all later ones may still pair
                near = other.nearest(key[0])
                if near is None or abs(near[0] - key[0]) > self.slop_ns:
                    stream.drop(key)

    def _emit(self, ready: Sequence[tuple[Any, Any]]) -> None:
        for thermal_msg, rgb_msg in ready:
            self._callback(thermal_msg, rgb_msg)


def stamp_to_ns(stamp: object) -> int:
    """A ``builtin_interfaces/Time`` (rclpy or rosbags type) as integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)  # type: ignore[attr-defined]
