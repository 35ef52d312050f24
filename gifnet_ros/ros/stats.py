"""The fusion node's statistics: counters, the /diagnostics status, and what is worth a log line.

Rates, counters and timings live in ``/diagnostics`` (a ``DiagnosticStatus`` per period); the
log says only what changed: inputs started or stopped arriving, pairs began or ceased to be
dropped (:class:`Activity`), and errors at most once per reason and interval
(:meth:`FusionStats.error`). An idle node is therefore quiet.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

ERROR_LOG_INTERVAL = 5.0
"""Seconds between two log lines for the same error reason; every error is still counted."""
LATENCY_WINDOW = 100
"""Fused pairs over which the latency and model-time statistics are taken."""
QUIET_AFTER = 3.0
"""Seconds without a message (or a drop) before an input counts as stopped (drops as ended).

Longer than the gap between two frames of a slow camera (1 Hz) or two diagnostics periods, so
a camera that keeps sending is not reported as stopping and starting again."""


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``values``; NaN for none (shown as ``nan`` in diagnostics)."""
    return float(np.percentile(np.asarray(values), q)) if values else math.nan


class FusionStats:
    """Counters and recent timings, shared by the DDS callbacks, the worker and the timer."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.thermal_in = 0
        self.rgb_in = 0
        self.pairs = 0
        self.fused = 0
        self.held = 0  # pairs fused with a frozen thermal image (thermal.freeze_action hold)
        self.drops: dict[str, int] = {"replaced": 0, "stale": 0}
        self.errors: dict[str, int] = {}
        self.last_error = ""
        self.reloads = 0
        self.reload_failures = 0
        self.fallbacks = 0
        self.clock_jumps = 0
        self.latency: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.model: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.model_total = 0.0
        self.last_model = math.nan
        self.last_processing = math.nan
        self._error_logged: dict[str, tuple[float, int]] = {}  # reason: (when, suppressed)

    def error(self, reason: str, text: str, now: float) -> str | None:
        """Count an error; the line to log, or None within ERROR_LOG_INTERVAL of the last one
        for this reason (the next line then says how many were not logged)."""
        with self.lock:
            self.errors[reason] = self.errors.get(reason, 0) + 1
            self.last_error = text
            last, suppressed = self._error_logged.get(reason, (-math.inf, 0))
            if now - last < ERROR_LOG_INTERVAL:
                self._error_logged[reason] = (last, suppressed + 1)
                return None
            self._error_logged[reason] = (now, 0)
        return text + (f" (+{suppressed} more since the last report)" if suppressed else "")

    def drop(self, reason: str) -> None:
        """Count one pair dropped for ``reason`` (caller holds :attr:`lock`)."""
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def fused_one(self, latency: float, model: float, processing: float) -> None:
        with self.lock:
            self.fused += 1
            self.latency.append(latency)
            self.model.append(model)
            self.model_total += model
            self.last_model = model
            self.last_processing = processing

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "thermal_in": self.thermal_in,
                "rgb_in": self.rgb_in,
                "pairs": self.pairs,
                "fused": self.fused,
                "held": self.held,
                "drops": dict(self.drops),
                "errors": dict(self.errors),
                "last_error": self.last_error,
                "reloads": self.reloads,
                "reload_failures": self.reload_failures,
                "fallbacks": self.fallbacks,
                "clock_jumps": self.clock_jumps,
                "latency": list(self.latency),
                "model": list(self.model),
                "model_total": self.model_total,
                "last_model": self.last_model,
                "last_processing": self.last_processing,
            }


def diagnostic_status(
    name: str,
    current: dict[str, Any],
    previous: dict[str, Any],
    elapsed: float,
    extra: dict[str, Any],
    hardware_id: str,
) -> DiagnosticStatus:
    """The node's status for one diagnostics period: rates over ``elapsed`` seconds since the
    ``previous`` snapshot, totals, timings, and the ``extra`` facts (model, sync) as given."""

    def rate(key: str) -> float:
        return (current[key] - previous[key]) / elapsed

    new_errors = sum(current["errors"].values()) - sum(previous["errors"].values())
    new_drops = sum(current["drops"].values()) - sum(previous["drops"].values())
    fused_now = current["fused"] - previous["fused"]
    latency, model = current["latency"], current["model"]
    values = {
        "thermal_rate_hz": f"{rate('thermal_in'):.2f}",
        "rgb_rate_hz": f"{rate('rgb_in'):.2f}",
        "pair_rate_hz": f"{rate('pairs'):.2f}",
        "fused_rate_hz": f"{rate('fused'):.2f}",
        "thermal_received": current["thermal_in"],
        "rgb_received": current["rgb_in"],
        "pairs": current["pairs"],
        "fused": current["fused"],
        "unpaired.thermal": current["thermal_in"] - current["pairs"],
        "unpaired.rgb": current["rgb_in"] - current["pairs"],
        "frozen.held": current["held"],
        **{f"dropped.{k}": v for k, v in sorted(current["drops"].items())},
        **{f"errors.{k}": v for k, v in sorted(current["errors"].items())},
        "last_error": current["last_error"],
        "latency_median_s": f"{percentile(latency, 50):.4f}",
        "latency_p95_s": f"{percentile(latency, 95):.4f}",
        "model_median_s": f"{percentile(model, 50):.4f}",
        "model_last_s": f"{current['last_model']:.4f}",
        "model_total_s": f"{current['model_total']:.4f}",
        "processing_last_s": f"{current['last_processing']:.4f}",
        **extra,
        "reloads": current["reloads"],
        "reload_failures": current["reload_failures"],
        "fallbacks_to_cpu": current["fallbacks"],
        "clock_jumps": current["clock_jumps"],
    }
    if new_errors and not fused_now:
        level, message = DiagnosticStatus.ERROR, f"{new_errors} bad input(s), nothing fused"
    elif new_errors or new_drops:
        level = DiagnosticStatus.WARN
        message = f"fusing; {new_errors} error(s), {new_drops} drop(s) in the last period"
    elif current["fused"] == 0:
        level, message = DiagnosticStatus.OK, "waiting for thermal/RGB pairs"
    else:
        level, message = DiagnosticStatus.OK, "fusing"
    return DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
    )


class Activity:
    """Turns snapshots into log lines on change only: inputs started, stopped, drops began, ended.

    :meth:`update` is called with each diagnostics snapshot; it returns the lines to log (none
    while nothing changed, so an idle node and a steadily fusing one are both quiet). An input
    has stopped once no message came for :data:`QUIET_AFTER` seconds; drops have ended once
    none was counted for as long. A change of the inputs is reported once it held on two
    updates in a row, so two cameras starting or stopping together (one a little before the
    other) make one line, not a passing "only one input" line first.
    """

    def __init__(self, topics: dict[str, str], snapshot: dict[str, Any]) -> None:
        self._topics = topics  # {"thermal_in": topic name, "rgb_in": topic name}
        self._last: dict[str, Any] = snapshot
        self._heard = {key: -math.inf for key in topics}  # when the count last went up
        self._receiving: set[str] = set()
        self._pending: set[str] | None = None  # a change seen on one update, not yet reported
        self._pending_since = snapshot
        self._dropped_at = -math.inf
        self._dropping = False
        self._since_start = snapshot

    def update(self, now: float, snapshot: dict[str, Any]) -> list[str]:
        lines = []
        for key in self._topics:
            if snapshot[key] > self._last[key]:
                self._heard[key] = now
        receiving = {key for key in self._topics if now - self._heard[key] < QUIET_AFTER}
        if receiving == self._receiving:
            self._pending = None
        elif receiving == self._pending:
            if not self._receiving:
                self._since_start = self._pending_since
            lines.append(self._inputs_line(receiving, snapshot))
            self._receiving, self._pending = receiving, None
        else:
            self._pending, self._pending_since = receiving, self._last
        drops = sum(snapshot["drops"].values())
        if drops > sum(self._last["drops"].values()):
            self._dropped_at = now
            if not self._dropping:
                self._dropping = True
                new = {
                    k: v - self._last["drops"].get(k, 0)
                    for k, v in snapshot["drops"].items()
                    if v > self._last["drops"].get(k, 0)
                }
                lines.append(
                    "pairs are being dropped ("
                    + ", ".join(f"{k} {v}" for k, v in sorted(new.items()))
                    + "); counts by reason in /diagnostics dropped.*"
                )
        elif self._dropping and now - self._dropped_at >= QUIET_AFTER:
            self._dropping = False
            lines.append(f"no pair dropped for {QUIET_AFTER:g} s")
        self._last = snapshot
        return lines

    def _inputs_line(self, receiving: set[str], snapshot: dict[str, Any]) -> str:
        names = [self._topics[key] for key in self._topics if key in receiving]
        silent = [self._topics[key] for key in self._topics if key not in receiving]
        if not receiving:
            start = self._since_start
            return (
                f"inputs stopped: no message on {' or '.join(silent)} for {QUIET_AFTER:g} s; "
                f"fused {snapshot['fused'] - start['fused']} of "
                f"{snapshot['pairs'] - start['pairs']} pairs while receiving"
            )
        if not silent:
            return f"receiving {' and '.join(names)}"
        return f"receiving only {names[0]}, nothing on {silent[0]}: no pairs to fuse"
