"""What a gifnet-fuse-bags run reports: ``fuse_bags_summary.json`` and the lines it prints.

Typed while the run fills it; ``FleetSummary.to_json`` writes the keys the summary has always
had, in their order (each bag's own report is ``bag_report.BagReport``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from gifnet_ros.offline.bag_report import PairCounts, flat_json


@dataclass(frozen=True)
class WorkerInfo:
    """Where a model worker runs and how, as it describes itself once its model is loaded."""

    host: str
    pid: int
    device: str
    precision: str
    batch: int
    model_load_s: float


@dataclass
class WorkerEntry:
    name: str
    alive: bool
    pairs: int  # results it returned
    info: WorkerInfo | None = None  # None: it died before describing itself

    def to_json(self) -> dict[str, Any]:
        return flat_json(self, "info")


@dataclass
class BagEntry:
    """One input and what became of it in this run."""

    input: str
    output: str
    report: str
    status: str  # complete, skipped, error, interrupted, not started
    error: str | None
    pairs: PairCounts | None  # None: the bag was never opened


@dataclass
class FleetSummary:
    status: str  # complete, incomplete, error or interrupted
    bags: dict[str, int]  # bags per status
    pairs_fused: int
    seconds: float
    pairs_per_s: float | None
    batch: int
    workers: list[WorkerEntry] = field(default_factory=list)
    workers_lost: int = 0
    pairs_redone: int = 0  # pairs of dead workers' calls, fused again by others
    leftovers: list[str] = field(default_factory=list)
    inputs: list[BagEntry] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The summary file's content."""
        written = asdict(self)
        written["workers"] = [worker.to_json() for worker in self.workers]
        return written

    def text(self, prog: str) -> str:
        """The summary's few lines: the totals, then one line per bag not fused in this run."""
        counts = ", ".join(f"{count} {status}" for status, count in sorted(self.bags.items()))
        rate = f" ({self.pairs_per_s:.2f} pairs/s)" if self.pairs_per_s else ""
        workers = len(self.workers)
        lines = [
            f"{prog}: {self.status}: {counts}; {self.pairs_fused} pairs fused in "
            f"{self.seconds:.1f} s{rate} by {workers} model worker{'s' * (workers != 1)}"
        ]
        if self.workers_lost:
            lines.append(
                f"  {self.workers_lost} workers died; {self.pairs_redone} of their "
                "pairs were fused again by others"
            )
        for entry in self.inputs:
            if entry.status == "skipped":
                lines.append(f"  skipped {entry.input}: {entry.output} is complete")
            elif entry.status != "complete":
                error = entry.error
                named = error if error.startswith(entry.input) else f"{entry.input}: {error}"
                lines.append(f"  {entry.status}: {named}")
        return "\n".join(lines)
