"""``gifnet-sync-offset`` (``ros2 run gifnet_ros sync_offset``): the clock offset between the
thermal and the RGB camera's stamps, estimated from a recording.

Why. Many thermal drivers (usb_cam, flir_boson_usb, optris) stamp a frame when the host
receives it, not when it was exposed, so thermal stamps lag RGB stamps by a constant tens to
hundreds of milliseconds and stamp pairing joins frames of different instants. The node and
the bag tools add ``sync.thermal_offset`` (seconds) to every thermal ``header.stamp`` before
pairing; this tool measures the value to set.

Sign convention. The offset ``o`` is what is ADDED to a thermal stamp so that it equals the
RGB stamp of the same instant: ``thermal_stamp + o == rgb_stamp``. A thermal driver whose
stamps are L seconds late (thermal stamp = RGB stamp + L for one instant) needs ``o = -L``.

Method. Anything that moves (the scene or the rig) changes both images at the same instants.
Each stream becomes a motion signal: every frame is made grey, shrunk to a small size (which
also hides the two cameras' different fields of view, resolutions and misregistration) and
brought to zero mean and unit standard deviation, so that automatic gain, 16-bit counts or
kelvin all compare (a stretch by the 1st and 99th percentiles instead, set by a few pixels of
a small image, jitters from frame to frame and drowned the motion on the M3SVD clips). The
signal at the midpoint of two consecutive stamps is the mean absolute difference of the two
frames divided by their stamp gap in whole frame periods (a dropped frame then gives the same
rate, not a spike, and stamp jitter adds nothing).
Both signals are sampled on one common time grid of half the shorter frame period; the
thermal one, shifted by each candidate offset within ``±max_offset``, is compared with the RGB
one by normalised cross-correlation over the instants both cover, and a parabola through the
best lag and its two neighbours places the peak between grid steps.
A peak is only trusted when it stands out: its correlation must reach ``MIN_PEAK`` and beat
the best correlation outside its lobe (the next best peak, at least ``RIVAL_FRAMES`` frame
periods away) by ``MIN_MARGIN``; a scene without motion, or with motion so periodic that
several offsets fit, is an error, not a guess. On the M3SVD clips the true peak reaches
0.6-0.7 with a margin of 0.14 or more, unrelated streams 0.45 at most with a margin of 0.06 at
most. An offset beyond ``max_offset`` is not found, and with repetitive motion it may show
as a wrong peak inside the range: search wide enough.

Bags are read with rosbags (no ROS install needed) in one pass, and each frame is reduced to
its small normalised copy as it is read, so memory holds two floats per frame, not pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import Reader

from gifnet_ros.fusion.conversion import ImageConversionError, compressed_to_array, image_to_array
from gifnet_ros.offline.bag_io import (
    COMPRESSED_IMAGE,
    IMAGE_TYPES,
    ToolError,
    header_stamp_ns,
    typestore,
)
from gifnet_ros.offline.make_bag import RGB_TOPIC, THERMAL_TOPIC

PROG = "gifnet-sync-offset"
NODE_NAME = "fusion_node"  # gifnet_ros.ros.node.NODE_NAME, not imported: that module needs rclpy
PARAMETER = "sync.thermal_offset"
DEFAULT_MAX_OFFSET = 1.0
DEFAULT_SIZE = (32, 24)
MIN_FRAMES = 3  # two frame differences: the fewest that make a signal with a shape
# Largest spread of the frame-to-frame changes (in standard deviations of a frame's
# brightness) that still counts as no motion: a repeated frame gives exactly 0 every time,
# sensor noise on a still scene already more.
FLAT = 1e-4
# A peak is trusted only with this correlation and this lead over the next best peak.
# Rivals within RIVAL_FRAMES frame periods are ripples of the peak itself (video codecs'
# alternating frame quality gives the M3SVD clips side peaks 2 frames out), not other answers.
MIN_PEAK = 0.5
MIN_MARGIN = 0.1
RIVAL_FRAMES = 2
# The thermal and RGB signals must overlap for at least this share of the shorter one at a lag
# for the lag to count: correlations over a few samples at the ends are chance.
MIN_OVERLAP = 0.5


class SyncOffsetError(ToolError):
    """The recording cannot give a trustworthy offset; the message says why (one line)."""


class MotionSignal:
    """How fast one camera's image changes over time, built frame by frame.

    ``add`` takes frames in stamp order; a frame whose stamp is not after the previous one
    (a duplicate or a message recorded out of order) is skipped and counted in ``skipped``,
    since a zero or negative stamp gap has no rate.
    """

    def __init__(self, size: tuple[int, int] = DEFAULT_SIZE) -> None:
        self.size = size
        self.frames = 0
        self.skipped = 0
        self._previous: tuple[int, np.ndarray] | None = None
        self._stamps: list[int] = []
        self._changes: list[float] = []

    def add(self, stamp_ns: int, image: np.ndarray) -> None:
        """One frame: grey or colour (RGB order), uint8, uint16 or float, any size."""
        if self._previous is not None and stamp_ns <= self._previous[0]:
            self.skipped += 1
            return
        small = normalised(image, self.size)
        if self._previous is not None:
            self._changes.append(float(np.abs(small - self._previous[1]).mean()))
        self._stamps.append(stamp_ns)
        self._previous = (stamp_ns, small)
        self.frames += 1

    @property
    def stamps_ns(self) -> np.ndarray:
        return np.asarray(self._stamps, np.int64)

    @property
    def changes(self) -> np.ndarray:
        """Mean absolute difference of each normalised frame from the one before."""
        return np.asarray(self._changes, np.float64)

    def period(self) -> float:
        """The median stamp gap in seconds (NaN below two frames)."""
        return float(np.median(np.diff(self.stamps_ns))) / 1e9 if self.frames > 1 else math.nan


def normalised(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` as grey float32 of ``size`` (width, height) with zero mean and unit standard
    deviation, so that frames of any encoding and gain compare; a flat frame becomes zeros."""
    values = np.asarray(image)
    if values.ndim == 3:
        values = cv2.cvtColor(values, cv2.COLOR_RGB2GRAY)
    values = values.astype(np.float32)
    finite = np.isfinite(values)
    if not finite.all():  # dead pixels of float cameras: the frame's typical value
        values[~finite] = float(np.median(values[finite])) if finite.any() else 0.0
    small = cv2.resize(values, size, interpolation=cv2.INTER_AREA)
    spread = float(small.std())
    if not spread > 0:
        return np.zeros_like(small)
    return (small - small.mean()) / spread


@dataclass(frozen=True)
class OffsetEstimate:
    """The result: ``offset`` (seconds) to add to thermal stamps, see the module docstring.

    ``peak`` is the normalised cross-correlation at the offset, ``runner_up`` the best one
    outside the peak's lobe: how sure the estimate is. Frame counts and median periods (s) say
    what it was measured on; the estimate is good to about a frame period at best.
    """

    offset: float
    peak: float
    runner_up: float
    thermal_frames: int
    rgb_frames: int
    thermal_period: float
    rgb_period: float

    @property
    def margin(self) -> float:
        return self.peak - self.runner_up


def _check(signal: MotionSignal, role: str) -> None:
    if signal.frames < MIN_FRAMES:
        raise SyncOffsetError(
            f"the {role} stream has {signal.frames} frame(s) with increasing stamps; "
            f"at least {MIN_FRAMES} are needed to see motion"
        )
    if np.ptp(signal.changes) <= FLAT:
        raise SyncOffsetError(
            f"no motion in the {role} stream: its {signal.frames} frames barely change; "
            "record something moving in both cameras (or move the rig)"
        )


def _series(signal: MotionSignal, origin_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """(times in s since ``origin_ns``, change per second) at the midpoints of frame gaps.

    A change is divided by the whole frame periods its gap spans, not by the gap itself: a
    camera exposes at a steady rate and its stamps jitter around it, so dividing by a 20 ms
    gap of a 45 ms camera would turn stamp jitter into motion; a dropped frame still counts.
    """
    stamps = (signal.stamps_ns - origin_ns) / 1e9
    period = signal.period()
    periods = np.maximum(1.0, np.round(np.diff(stamps) / period))
    return (stamps[1:] + stamps[:-1]) / 2.0, signal.changes / (periods * period)


def _on_grid(grid: np.ndarray, times: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """``rate`` linearly interpolated at ``grid``; NaN outside the span it was measured on."""
    values = np.interp(grid, times, rate)
    values[(grid < times[0]) | (grid > times[-1])] = np.nan
    return values


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equal-length samples; NaN when either is constant."""
    a, b = a - a.mean(), b - b.mean()
    norm = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / norm if norm > 0 else math.nan


def _runner_up(corr: np.ndarray, best: int, min_half_width: int) -> float:
    """The best correlation outside the peak's lobe: from ``best`` down to the nearest
    local minimum on each side, but at least ``min_half_width`` lags wide, so that wiggles
    on the flanks of one broad peak do not count as a rival."""
    left = best
    while left > 0 and (corr[left - 1] <= corr[left] or best - left < min_half_width):
        left -= 1
    right = best
    last = len(corr) - 1
    while right < last and (corr[right + 1] <= corr[right] or right - best < min_half_width):
        right += 1
    outside = np.concatenate([corr[:left], corr[right + 1 :]])
    outside = outside[np.isfinite(outside)]
    return float(outside.max()) if outside.size else -1.0


def correlate(
    thermal: MotionSignal, rgb: MotionSignal, max_offset: float = DEFAULT_MAX_OFFSET
) -> OffsetEstimate:
    """The offset to add to thermal stamps (module docstring) from two motion signals.

    Raises SyncOffsetError when a stream has too few frames or no motion, when the streams
    do not overlap enough in time, when the best offset lies at the edge of ``±max_offset``
    (the true one may lie beyond) or when no peak stands out.
    """
    if not max_offset > 0:
        raise SyncOffsetError(f"the largest offset searched must be > 0 s, got {max_offset}")
    _check(thermal, "thermal")
    _check(rgb, "RGB")
    origin = int(min(thermal.stamps_ns[0], rgb.stamps_ns[0]))
    th_times, th_rate = _series(thermal, origin)
    rgb_times, rgb_rate = _series(rgb, origin)
    period = min(thermal.period(), rgb.period())
    step = period / 2.0
    start = min(th_times[0], rgb_times[0]) - max_offset
    end = max(th_times[-1], rgb_times[-1]) + max_offset
    grid = start + step * np.arange(int((end - start) / step) + 2)
    th_grid = _on_grid(grid, th_times, th_rate)
    rgb_grid = _on_grid(grid, rgb_times, rgb_rate)
    shortest = min(np.isfinite(th_grid).sum(), np.isfinite(rgb_grid).sum())
    reach = int(max_offset / step)
    lags = np.arange(-reach, reach + 1)
    corr = np.full(lags.size, np.nan)
    for i, lag in enumerate(lags):
        # thermal_stamp + offset lines up with the RGB stamp: the RGB sample at grid index k
        # meets the thermal sample at k - lag.
        shifted = np.roll(th_grid, lag)
        if lag > 0:
            shifted[:lag] = np.nan
        elif lag < 0:
            shifted[lag:] = np.nan
        both = np.isfinite(shifted) & np.isfinite(rgb_grid)
        if both.sum() >= max(MIN_OVERLAP * shortest, 3):
            corr[i] = _ncc(shifted[both], rgb_grid[both])
    if not np.isfinite(corr).any():
        raise SyncOffsetError(
            f"the thermal and RGB stamps do not overlap in time within ±{max_offset:g} s "
            "(clocks far apart? raise --max-offset)"
        )
    best = int(np.nanargmax(corr))
    peak = float(corr[best])
    if best in (0, lags.size - 1) or not (
        np.isfinite(corr[best - 1]) and np.isfinite(corr[best + 1])
    ):
        raise SyncOffsetError(
            f"the best offset lies at the edge of the ±{max_offset:g} s searched "
            f"({lags[best] * step:+.3f} s): the true one may be larger; raise --max-offset"
        )
    below, above = corr[best - 1], corr[best + 1]
    curvature = below - 2.0 * peak + above
    shift = 0.5 * (below - above) / curvature if curvature < 0 else 0.0
    frame_lags = max(1, round(RIVAL_FRAMES * max(thermal.period(), rgb.period()) / step))
    runner_up = _runner_up(corr, best, frame_lags)
    if peak < MIN_PEAK or peak - runner_up < MIN_MARGIN:
        raise SyncOffsetError(
            f"no clear correlation peak (best {peak:.2f} at {lags[best] * step:+.3f} s, next "
            f"best {runner_up:.2f}): too little or too repetitive motion in the recording, or "
            f"an offset beyond ±{max_offset:g} s"
        )
    return OffsetEstimate(
        offset=float((lags[best] + shift) * step),
        peak=peak,
        runner_up=runner_up,
        thermal_frames=thermal.frames,
        rgb_frames=rgb.frames,
        thermal_period=thermal.period(),
        rgb_period=rgb.period(),
    )


def motion_signal(
    frames: Iterable[tuple[int, np.ndarray]], size: tuple[int, int] = DEFAULT_SIZE
) -> MotionSignal:
    """The motion signal of ``(stamp in ns, image)`` frames in stamp order."""
    signal = MotionSignal(size)
    for stamp_ns, image in frames:
        signal.add(stamp_ns, image)
    return signal


def estimate_offset(
    thermal: Iterable[tuple[int, np.ndarray]],
    rgb: Iterable[tuple[int, np.ndarray]],
    max_offset: float = DEFAULT_MAX_OFFSET,
    size: tuple[int, int] = DEFAULT_SIZE,
) -> OffsetEstimate:
    """The offset to ADD to thermal stamps so that they match the RGB stamps of the same
    instants (``thermal_stamp + offset == rgb_stamp``), from ``(stamp in ns, image)`` frames
    of each camera in stamp order with motion in view. Raises SyncOffsetError (see
    ``correlate``) instead of returning an estimate it cannot back."""
    return correlate(motion_signal(thermal, size), motion_signal(rgb, size), max_offset)


# ---------------------------------------------------------------------------- the bag


def _topic(reader: Reader, bag: Path, name: str, default: str, role: str) -> str:
    """The topic to read: ``name`` with a leading slash; for a default name that the bag
    lacks, its image_transport ``/compressed`` form when the bag has that."""
    topic = name if name.startswith("/") else "/" + name
    types = {c.topic: c.msgtype for c in reader.connections}
    if topic not in types and name == default and topic + "/compressed" in types:
        topic += "/compressed"
    if topic not in types:
        images = sorted(t for t, kind in types.items() if kind in IMAGE_TYPES)
        raise ToolError(
            f"{bag}: no {role} topic {topic}; image topics in the bag: "
            f"{', '.join(images) or 'none'}"
        )
    if types[topic] not in IMAGE_TYPES:
        raise ToolError(
            f"{bag}: {role} topic {topic} has type {types[topic]}, "
            "expected an Image or CompressedImage"
        )
    return topic


def bag_signals(
    bag: Path, thermal_topic: str, rgb_topic: str, size: tuple[int, int]
) -> tuple[MotionSignal, MotionSignal]:
    """The (thermal, RGB) motion signals of a rosbag2, read in one pass in recording order.

    Stamps are the messages' ``header.stamp`` (``rosbag_io.header_stamp_ns``), what the node
    pairs by. Raises ToolError for a missing or unreadable bag, topic or image.
    """
    if not bag.exists():
        raise ToolError(f"{bag}: no such file or directory")
    try:
        with Reader(bag) as reader:
            topics = {
                _topic(reader, bag, thermal_topic, THERMAL_TOPIC, "thermal"): "thermal",
                _topic(reader, bag, rgb_topic, RGB_TOPIC, "RGB"): "RGB",
            }
            if len(topics) == 1:
                raise ToolError(f"thermal and RGB topic are both {next(iter(topics))}")
            signals = {role: MotionSignal(size) for role in topics.values()}
            wanted = [c for c in reader.connections if c.topic in topics]
            store = typestore()
            for conn, _, raw in reader.messages(connections=wanted):
                role = topics[conn.topic]
                where = f"{bag}: {conn.topic} message {signals[role].frames + 1}"
                try:
                    msg = store.deserialize_cdr(raw, conn.msgtype)
                    convert = (
                        compressed_to_array if conn.msgtype == COMPRESSED_IMAGE else image_to_array
                    )
                    signals[role].add(header_stamp_ns(raw), convert(msg))
                except (ImageConversionError, ValueError) as exc:
                    raise ToolError(f"{where}: {' '.join(str(exc).split())}") from None
    except ToolError:
        raise
    except Exception as exc:  # rosbags, storage and CDR errors alike name the problem
        raise ToolError(f"{bag}: cannot read the bag: {' '.join(str(exc).split())}") from None
    return signals["thermal"], signals["RGB"]


# ---------------------------------------------------------------------------- the report


def report(estimate: OffsetEstimate) -> str:
    """What the tool prints: a summary line, the parameter as a params-file snippet and the
    bag tools' flag, so the user pastes the value instead of retyping it."""
    rounded = round(estimate.offset, 3) + 0.0  # + 0.0: no "-0.000"
    value = f"{rounded:.3f}"
    if rounded == 0:
        meaning = "thermal and RGB stamps agree"
    else:
        lateness = "late" if rounded < 0 else "early"
        meaning = f"thermal stamps {abs(rounded) * 1e3:.0f} ms {lateness} against RGB"
    return "\n".join(
        [
            f"{PROG}: {PARAMETER} = {value} s ({meaning}); correlation peak {estimate.peak:.2f}, "
            f"{estimate.margin:.2f} above the next best peak; frames used: "
            f"{estimate.thermal_frames} thermal ({1 / estimate.thermal_period:.1f} Hz), "
            f"{estimate.rgb_frames} RGB ({1 / estimate.rgb_period:.1f} Hz)",
            f"{NODE_NAME}:",
            "  ros__parameters:",
            f"    {PARAMETER}: {value}",
            f"gifnet-fuse-bag flag: --thermal-offset {value}",
        ]
    )
