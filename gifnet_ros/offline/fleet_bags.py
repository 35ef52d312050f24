"""gifnet-fuse-bags' inputs: the bags below the paths given, their output names, and what
became of each (``BagTask``)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rosbags.rosbag2 import Reader

from gifnet_ros.offline.bag_fusion import BagFusion
from gifnet_ros.offline.bag_reader import BAG_SUFFIXES, topic_name
from gifnet_ros.offline.bag_settings import BagSettings
from gifnet_ros.offline.fleet_summary import BagEntry

REPORT_SUFFIX = ".report.json"


@dataclass
class BagTask:
    """One input and what became of it."""

    source: Path
    name: str  # the output's path below OUT_DIR
    status: str = "waiting"  # waiting, open, complete, skipped, error, interrupted, not started
    error: str | None = None
    estimate: int = 0  # its pairs in the bar's total: from the metadata until pass 1 counts
    fusion: BagFusion | None = None

    def entry(self, out_dir: Path) -> BagEntry:
        """The bag's line in the run's summary."""
        return BagEntry(
            input=str(self.source),
            output=str(out_dir / self.name),
            report=str(out_dir / (self.name + REPORT_SUFFIX)),
            status=self.status,
            error=self.error,
            pairs=None if self.fusion is None else self.fusion.report.pairs,
        )


def find_bags(inputs: Sequence[Path], out_dir: Path) -> list[BagTask]:
    """Every input as bags with their output names; an input that is none, as a failed task.

    A directory with metadata.yaml and a .mcap/.db3 file are bags named after themselves; any
    other directory is searched, and the bags found in it keep their place below it (so
    ``day1/run_0`` and ``day2/run_0`` do not collide). Hidden folders and OUT_DIR are skipped.
    """
    tasks: list[BagTask] = []
    skip = out_dir.resolve()
    for source in inputs:
        if source.is_file() and source.suffix in BAG_SUFFIXES:
            tasks.append(BagTask(source, source.stem))
        elif (source / "metadata.yaml").is_file():
            tasks.append(BagTask(source, source.resolve().name))
        elif source.is_dir():
            found = [
                BagTask(
                    bag,
                    str(
                        bag.relative_to(source).with_suffix("")
                        if bag.is_file()
                        else bag.relative_to(source)
                    ),
                )
                for bag in _search(source, skip)
            ]
            tasks.extend(found)
            if not found:
                tasks.append(_failed(source, "no bags found (no metadata.yaml, .mcap or .db3)"))
        elif source.exists():
            tasks.append(_failed(source, "not a bag: expected a rosbag2 directory, .mcap or .db3"))
        else:
            tasks.append(_failed(source, "no such file or directory"))
    seen: dict[str, Path] = {}
    for task in tasks:
        if task.status == "waiting" and task.name in seen:
            task.status = "error"
            task.error = f"{task.source}: same output name {task.name} as {seen[task.name]}"
        seen.setdefault(task.name, task.source)
    return tasks


def _failed(source: Path, reason: str) -> BagTask:
    return BagTask(source, source.name, status="error", error=f"{source}: {reason}")


def _search(folder: Path, skip: Path) -> Iterator[Path]:
    """Bags below ``folder`` in name order: directories with metadata.yaml (not entered) and
    .mcap/.db3 files outside them."""
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and (here / d).resolve() != skip
        )
        bags = [d for d in dirnames if (here / d / "metadata.yaml").is_file()]
        for name in sorted([*bags, *(f for f in filenames if Path(f).suffix in BAG_SUFFIXES)]):
            yield here / name
        dirnames[:] = [d for d in dirnames if d not in bags]


def estimate_pairs(task: BagTask, settings: BagSettings) -> int:
    """Pairs a bag will have at most, from its metadata (cheap): for the progress bar's total
    until pass 1 counts them. 0 where the bag cannot be opened; pass 1 will say why."""
    try:
        with Reader(task.source) as reader:
            counts = {name: info.msgcount for name, info in reader.topics.items()}
    except Exception:  # any failure is reported properly by pass 1
        return 0
    topics = [topic_name(name) for name in (settings.thermal_topic, settings.rgb_topic)]
    return min(counts.get(topic, 0) for topic in topics)
