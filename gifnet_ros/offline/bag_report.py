"""What a bag's fusion reports: typed while the run fills it, the same JSON keys when written.

``BagReport.to_json`` gives the ``--report`` file's content (and each bag's
``NAME.report.json`` in gifnet-fuse-bags) with the keys, nesting and key order the reports
have always had; fields that a run has not reached yet are left out of ``timing`` and
``topics``, as before. The report is current at every moment, so that an error or Ctrl-C
still writes what was done.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from gifnet_ros.fusion.image_files import write_bytes_atomic
from gifnet_ros.fusion.pairing import PairingResult
from gifnet_ros.offline.bag_reader import ImageStream, stamp_text, topic_name
from gifnet_ros.offline.bag_settings import BagSettings


def flat_json(item: Any, group: str, drop_none: bool = False) -> dict[str, Any]:
    """A dataclass as the reports write it: its fields in order, the dataclass in field
    ``group`` (if not None) spread among them at the end, without fields that are None when
    ``drop_none``. The reports keep such groups flat."""
    written: dict[str, Any] = {}
    for f in fields(item):
        value = getattr(item, f.name)
        if f.name != group and not (drop_none and value is None):
            written[f.name] = value
    inner = getattr(item, group)
    if inner is not None:
        written.update(asdict(inner))
    return written


@dataclass
class TopicCount:
    """One topic of the input: its type, the messages its metadata claims, and (for the two
    image topics, after pass 1) the messages its storage holds."""

    type: str
    messages: int
    messages_read: int | None = None


@dataclass
class PairCounts:
    planned: int = 0
    fused: int = 0
    skipped: int = 0  # undecodable or unfusable, with --skip-bad
    frozen: int = 0  # a repeated thermal image, skipped by --freeze-action
    held: int = 0  # a repeated thermal image fused by --freeze-action hold


@dataclass
class Unpaired:
    count: int = 0
    stamps_ns: list[int] = field(default_factory=list)


@dataclass
class StampDifference:
    """Thermal stamp minus RGB stamp over the pairs, in milliseconds."""

    median: float
    median_abs: float
    max_abs: float


@dataclass
class SkippedPair:
    rgb_stamp_ns: int
    thermal_stamp_ns: int
    reason: str


@dataclass
class Timing:
    """Seconds spent, each known once the run got that far (None: not reached, left out)."""

    scan_s: float | None = None
    thermal_pass_s: float | None = None
    model_load_s: float | None = None  # in this process; gifnet-fuse-bags' workers load theirs
    total_s: float | None = None
    fusion: FusionTiming | None = None

    def to_json(self) -> dict[str, Any]:
        return flat_json(self, "fusion", drop_none=True)


@dataclass
class FusionTiming:
    """From the first pair read in pass 2 to the end; rates are None for no time at all."""

    fusion_s: float
    model_s: float
    pairs_per_s: float | None
    model_share: float | None


@dataclass
class BagReport:
    """One run over one bag; see the module docstring. The fields are in the order of the
    JSON keys."""

    input: str
    output: str
    status: str = "running"  # complete, error or interrupted at the end
    error: str | None = None
    output_written: bool = False
    settings: BagSettings = field(kw_only=True)
    topics: dict[str, TopicCount] = field(default_factory=dict)
    pairs: PairCounts = field(default_factory=PairCounts)
    unpaired_rgb: Unpaired = field(default_factory=Unpaired)
    unpaired_thermal: Unpaired = field(default_factory=Unpaired)
    stamp_difference_ms: StampDifference | None = None
    skipped: list[SkippedPair] = field(default_factory=list)
    last_fused_rgb_stamp_ns: int | None = None
    peak_buffered_messages: int = 0
    leftovers: list[str] = field(default_factory=list)
    output_topics: dict[str, int] = field(default_factory=dict)
    timing: Timing = field(default_factory=Timing)
    # Pairs per network call, once the device has decided it; written inside the settings.
    batch: int | None = None

    def settings_json(self) -> dict[str, Any]:
        """The settings as recorded, with the batch once it is known."""
        recorded = self.settings.report_json()
        if self.batch is not None:
            recorded["batch"] = self.batch
        return recorded

    def record_pairing(
        self, pairing: PairingResult, thermal: ImageStream, rgb: ImageStream
    ) -> None:
        """The pairs planned, what stayed unpaired and how far apart the pairs' stamps are."""
        self.pairs.planned = len(pairing.pairs)
        self.unpaired_rgb = Unpaired(
            len(pairing.unpaired_rgb), [rgb.stamps[i] for i in pairing.unpaired_rgb]
        )
        self.unpaired_thermal = Unpaired(
            len(pairing.unpaired_thermal), [thermal.stamps[i] for i in pairing.unpaired_thermal]
        )
        diffs = pairing.differences_ns
        if diffs:
            self.stamp_difference_ms = StampDifference(
                median=statistics.median(diffs) / 1e6,
                median_abs=statistics.median(abs(d) for d in diffs) / 1e6,
                max_abs=max(abs(d) for d in diffs) / 1e6,
            )

    def finish(
        self, status: str, error: str | None, total_s: float, fusion_s: float | None, model_s: float
    ) -> None:
        """Close the report: status, error, timing and throughput (``fusion_s`` None: no pair
        was read)."""
        self.status, self.error = status, error
        self.timing.total_s = round(total_s, 3)
        if fusion_s is not None:
            self.timing.fusion = FusionTiming(
                fusion_s=round(fusion_s, 3),
                model_s=round(model_s, 3),
                pairs_per_s=round(self.pairs.fused / fusion_s, 3) if fusion_s > 0 else None,
                model_share=round(model_s / fusion_s, 3) if fusion_s else None,
            )

    def to_json(self) -> dict[str, Any]:
        """The report as written: its fields in order, the batch inside the settings, topics and
        timing without what is not known yet."""
        written: dict[str, Any] = {}
        for name in (f.name for f in fields(self) if f.name != "batch"):
            value = getattr(self, name)
            if name == "settings":
                value = self.settings_json()
            elif name == "topics":
                value = {
                    topic: {k: v for k, v in asdict(count).items() if v is not None}
                    for topic, count in value.items()
                }
            elif name == "timing":
                value = value.to_json()
            elif is_dataclass(value):
                value = asdict(value)
            elif isinstance(value, list):
                value = [asdict(item) if is_dataclass(item) else item for item in value]
            elif isinstance(value, dict):
                value = dict(value)
            written[name] = value
        return written

    def summary(self, prog: str) -> str:
        """A few human-readable lines for the end of the run."""
        pairs = self.pairs
        lines = [
            f"{prog}: {self.status}: fused {pairs.fused} of {pairs.planned} pairs"
            + (f", skipped {pairs.skipped}" if pairs.skipped else "")
            + (f", {pairs.frozen} with a frozen thermal image" if pairs.frozen else "")
            + (
                f" -> {self.output}"
                if self.output_written
                else f"; nothing written to {self.output}"
            ),
        ]
        if self.last_fused_rgb_stamp_ns is not None and not self.output_written:
            lines.append(f"  got as far as RGB stamp {stamp_text(self.last_fused_rgb_stamp_ns)}")
        for unpaired, name in (
            (self.unpaired_rgb, self.settings.rgb_topic),
            (self.unpaired_thermal, self.settings.thermal_topic),
        ):
            topic = topic_name(name)
            if topic in self.topics:
                lines.append(
                    f"  {topic}: {self.topics[topic].messages} messages, {unpaired.count} unpaired"
                )
        diff = self.stamp_difference_ms
        if diff:
            lines.append(
                f"  stamp difference thermal - RGB: median {diff.median:.3f} ms, "
                f"max |difference| {diff.max_abs:.3f} ms"
            )
        fusion = self.timing.fusion
        if fusion is not None and fusion.pairs_per_s:
            lines.append(
                f"  throughput {fusion.pairs_per_s:.2f} pairs/s; the model took "
                f"{100 * (fusion.model_share or 0):.0f}% of the fusion time"
            )
        return "\n".join(lines)


def write_report(path: Path, report: dict[str, Any]) -> None:
    """A run's report (or gifnet-fuse-bags' summary) as JSON, atomically: a reader never
    finds half of it."""
    write_bytes_atomic(path, (json.dumps(report, indent=2) + "\n").encode())
