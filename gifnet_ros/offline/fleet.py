"""``gifnet-fuse-bags`` (``ros2 run gifnet_ros fuse_bags``): fuse many bags over Ray.

A season of drives is thousands of bags, and GIFNet costs seconds per pair on a CPU; this tool
spreads the pairs over every model worker of a Ray cluster (or of this machine, where Ray is
started in-process) and writes, for every input, the bag ``gifnet-fuse-bag`` would write for
it with the same options, byte for byte.

Which cluster
-------------
Ray's own order (``_choose_cluster``): ``--address``, else ``RAY_ADDRESS``, else the cluster
``ray start`` recorded on this machine, else a private Ray started in this process with this
machine's CPUs. A joined cluster is named in one line with its resources; the workers' CPU
and GPU options are the actors', never ray.init's (which Ray refuses for a running cluster).
A record of a cluster that is gone (killed without ``ray stop``) is ignored with one line.

How the work is split
---------------------
* A worker is a Ray actor that loads the model once (``bag_tool.PairFuser``) and fuses what it
  is sent: runs of ``--batch`` consecutive pairs, as many runs per call as make about
  ``CALL_SECONDS`` of work (one run when a pair takes longer: the last pairs of a bag then
  spread evenly; several for a fast rule, where a call's ~1 ms would otherwise dominate),
  never more than ``MAX_PAIRS_PER_CALL`` pairs. Each worker has at most ``TASKS_PER_WORKER``
  calls in flight (one running, one waiting), so the pairs held anywhere are bounded by the
  number of workers, not by the bags' lengths.
* This process (the driver) reads the bags and writes the outputs: bag_tool's two passes and
  its in-order writer, with pairs handed to the workers instead of a local engine. Pairs are
  taken from the first bag that still has unread pairs, so one long bag keeps every worker
  busy and, at its end, the next bag starts while its last pairs are fused.
* Results come back in any order; each bag writes them in its read order, so its output does
  not depend on how many workers there were or which fused what.

What survives what
------------------
* A worker that dies (killed, out of memory, its node lost) has its calls sent again to the
  others and is replaced; a pair is written once, when its first result arrives in order.
  A call whose workers die ``MAX_ATTEMPTS`` times fails its bag instead of the whole cluster.
* A bag that cannot be read or fused fails alone, with its reason in its report and in the
  summary; the others go on. Exit status 0 only when every bag is fused (or was already).
* Outputs appear under their final names only when complete (``rosbag_io.staged_output``),
  each with ``NAME.report.json`` beside it. A second run skips a bag whose output and report
  are complete and were made with the same settings, redoes one that was interrupted, and
  removes the hidden folders of runs that were killed (``rosbag_io.remove_dead_partials``).
* Ctrl-C or SIGTERM removes the bags in progress, writes the reports and the summary, and
  exits with 130.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import ray
    from ray._common.utils import get_ray_address_file
    from ray.exceptions import RayActorError, RayError, RayTaskError
except ImportError:  # a ROS install without Ray: main() says how to get it, in one line
    ray = None
from rosbags.rosbag2 import Reader
from tqdm import tqdm

from gifnet_ros.offline.bag_fusion import (
    BagFusion,
    PairFuser,
    PairJob,
    PairResult,
    add_fusion_arguments,
    progress_bar,
    write_report,
)
from gifnet_ros.offline.bag_io import ToolError, interrupt_on_sigterm, remove_dead_partials
from gifnet_ros.offline.bag_reader import BAG_SUFFIXES

PROG = "gifnet-fuse-bags"
SUMMARY = "fuse_bags_summary.json"
REPORT_SUFFIX = ".report.json"
CALL_SECONDS = 0.05  # work per call aimed at, once the workers' time per pair is known
MAX_PAIRS_PER_CALL = 32
TASKS_PER_WORKER = 2  # calls in flight per worker: one being fused, one waiting
MAX_ATTEMPTS = 3  # workers a call may kill before its bag is given up
LOCAL_OBJECT_STORE = 256 * 2**20  # bytes; pairs in flight are a few MB, not the bags


class FusionWorker:
    """A model worker: one PairFuser (one loaded model) for its whole life. Started as a Ray
    actor (``ray.remote(FusionWorker)``), so that this module imports without Ray."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.fuser = PairFuser(args)

    def describe(self) -> dict[str, Any]:
        """Where the model runs and how: for the summary and the driver's batch size."""
        engine = self.fuser.engine
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "device": str(engine.device),
            "precision": engine.precision,
            "batch": self.fuser.batch,
            "model_load_s": self.fuser.load_seconds,
        }

    def fuse(self, batches: list[list[PairJob]]) -> tuple[list[list[PairResult]], float]:
        """Each run's results, and the seconds they took here (for the driver's call size)."""
        started = time.perf_counter()
        results = [self.fuser.fuse(jobs) for jobs in batches]
        return results, time.perf_counter() - started


@dataclass
class BagTask:
    """One input and what became of it."""

    source: Path
    name: str  # the output's path below OUT_DIR
    status: str = "waiting"  # waiting, open, complete, skipped, error, interrupted, not started
    error: str | None = None
    estimate: int = 0  # its pairs in the bar's total: from the metadata until pass 1 counts
    fusion: BagFusion | None = None

    def entry(self, out_dir: Path) -> dict[str, Any]:
        report = self.fusion.report if self.fusion is not None else {}
        return {
            "input": str(self.source),
            "output": str(out_dir / self.name),
            "report": str(out_dir / (self.name + REPORT_SUFFIX)),
            "status": self.status,
            "error": self.error,
            "pairs": report.get("pairs"),
        }


@dataclass
class Call:
    """Pairs sent to one worker in one call."""

    task: BagTask
    batches: list[list[PairJob]]
    worker: int
    attempts: int = 1

    @property
    def pairs(self) -> int:
        return sum(len(jobs) for jobs in self.batches)


@dataclass
class Worker:
    handle: Any
    name: str
    in_flight: int = 0
    alive: bool = True
    pairs: int = 0  # results it returned
    info: dict[str, Any] = field(default_factory=dict)


# -- finding the bags ----------------------------------------------------------------------


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


def _estimate(task: BagTask, args: argparse.Namespace) -> int:
    """Pairs a bag will have at most, from its metadata (cheap): for the progress bar's total
    until pass 1 counts them. 0 where the bag cannot be opened; pass 1 will say why."""
    try:
        with Reader(task.source) as reader:
            counts = {name: info.msgcount for name, info in reader.topics.items()}
    except Exception:  # any failure is reported properly by pass 1
        return 0
    topics = [
        name if name.startswith("/") else "/" + name
        for name in (args.thermal_topic, args.rgb_topic)
    ]
    return min(counts.get(topic, 0) for topic in topics)


# -- the run -------------------------------------------------------------------------------


class FleetRun:
    """One run of gifnet-fuse-bags over the tasks, on Ray workers."""

    def __init__(self, args: argparse.Namespace, tasks: list[BagTask]) -> None:
        self.args = args
        self.out_dir: Path = args.output_dir
        self.tasks = tasks
        self.workers: list[Worker] = []
        self.replacements = 0
        self.workers_lost = 0
        self.pairs_redone = 0
        self.leftovers: list[str] = []
        self.batch = 1
        self.pair_seconds: float | None = None  # a worker's seconds per pair, smoothed
        self.initial_workers = 0
        self.started = time.monotonic()
        # Names the workers (``ray list actors``); unique, as an embedding program may run
        # several fleets in one process.
        self.run_id = f"{os.getpid()}-{secrets.token_hex(3)}"
        self.bar: Any = None
        self.calls: dict[Any, Call] = {}  # ObjectRef -> call
        self.retry: deque[Call] = deque()
        self.queue: deque[BagTask] = deque()  # waiting for their first pair to be sent
        self.open: list[BagTask] = []  # outputs being written

    # -- tasks -----------------------------------------------------------------------------

    def bag_args(self, task: BagTask) -> argparse.Namespace:
        """gifnet-fuse-bag's options for one bag: the run's, with its input and output."""
        return argparse.Namespace(
            **{
                **vars(self.args),
                "input": task.source,
                "output": self.out_dir / task.name,
                "overwrite": True,  # an output without a complete report is redone
            }
        )

    def prepare(self) -> None:
        """Leftovers of killed runs, then which bags are done already (resume)."""
        for task in self.tasks:
            output = self.out_dir / task.name
            output.parent.mkdir(parents=True, exist_ok=True)
            for line in remove_dead_partials(output):
                self.leftovers.append(line)
                self.say(line)
            if task.status != "waiting":
                continue
            if not self.args.overwrite:
                self._check_done(task)
            if task.status == "waiting":
                task.estimate = _estimate(task, self.args)
                self.queue.append(task)

    def _check_done(self, task: BagTask) -> None:
        """Skip a bag whose output and report are complete and made with these settings."""
        output = self.out_dir / task.name
        try:
            report = json.loads((self.out_dir / (task.name + REPORT_SUFFIX)).read_text())
        except (OSError, ValueError):
            return  # never fused, or interrupted before its report: fused from scratch
        if not (
            report.get("status") == "complete"
            and report.get("output_written")
            and (output / "metadata.yaml").is_file()
        ):
            return
        before = {**report.get("settings", {}), "input": report.get("input")}
        settings = BagFusion(self.bag_args(task)).report["settings"]
        # Without --batch, the batch follows the workers' device: a bag fused on a CPU
        # (batch 1) is not redone because GPUs (batch 8) are at hand now.
        settings["batch"] = self.args.batch or before.get("batch")
        settings["input"] = str(task.source)
        changed = sorted(
            k for k in settings.keys() | before.keys() if settings.get(k) != before.get(k)
        )
        if changed:
            task.status = "error"
            task.error = (
                f"{output} was fused with other settings ({', '.join(changed)}); pass "
                "--overwrite to fuse it again"
            )
        else:
            task.status = "skipped"

    # -- workers ---------------------------------------------------------------------------

    def start_workers(self) -> None:
        """Start the model workers and wait until each has loaded the model."""
        resources = ray.cluster_resources()
        gpus = self.args.gpus_per_worker
        if gpus is None:
            gpus = 1.0 if resources.get("GPU", 0) >= 1 and self.args.device != "cpu" else 0.0
        cpus = 1 if gpus else (self.args.threads or 1)
        count = self.args.workers
        if count is None:
            count = (
                int(resources.get("GPU", 0) // gpus)
                if gpus
                else int(resources.get("CPU", 1) // cpus)
            )
            count = max(1, count)
        need = {"CPU": cpus * count, "GPU": gpus * count}
        short = [f"{need[k]:g} {k}s" for k in need if need[k] > resources.get(k, 0)]
        if short:
            raise ToolError(
                f"{count} workers need {' and '.join(short)}; the cluster has "
                f"{resources.get('CPU', 0):g} CPUs and {resources.get('GPU', 0):g} GPUs "
                "(fewer --workers, or --gpus-per-worker)"
            )
        # A CPU worker fuses with as many threads as it reserved CPUs: more would only fight
        # the other workers for the same cores.
        worker_args = argparse.Namespace(
            **{**vars(self.args), "threads": self.args.threads or (None if gpus else cpus)}
        )
        self._options = {"num_cpus": cpus, "num_gpus": gpus, "max_restarts": 0}
        self._worker_args = worker_args
        self.initial_workers = count
        for _ in range(count):
            self._add_worker()
        for worker in self.workers:
            try:
                worker.info = ray.get(worker.handle.describe.remote())
            except RayActorError as exc:
                raise ToolError(f"a model worker failed to start: {_cause(exc)}") from None
        self.batch = self.args.batch or self.workers[0].info["batch"]

    def _add_worker(self) -> None:
        name = f"{PROG}-{self.run_id}-{len(self.workers)}"
        actor = ray.remote(FusionWorker)
        handle = actor.options(name=name, **self._options).remote(self._worker_args)
        self.workers.append(Worker(handle, name))

    def _lose_worker(self, index: int) -> None:
        """A worker died: forget it and, a limited number of times, start another."""
        worker = self.workers[index]
        if not worker.alive:
            return
        worker.alive = False
        self.workers_lost += 1
        self.say(f"model worker {worker.name} died; its pairs go to the other workers")
        if self.replacements < self.initial_workers:
            self.replacements += 1
            self._add_worker()

    # -- scheduling ------------------------------------------------------------------------

    def run(self) -> None:
        """Fuse every queued bag; returns when all are finished one way or another."""
        total = sum(task.estimate for task in self.queue)
        with progress_bar(total, self.args.no_progress) as bar:
            self.bar = bar
            self._bags_postfix()
            while self._dispatch() or self.calls:
                if not self.calls:
                    continue
                ready, _ = ray.wait(list(self.calls), num_returns=1)
                for ref in ready:
                    self._collect(ref, self.calls.pop(ref))

    def _bags_postfix(self) -> None:
        finished = sum(task.status in ("complete", "skipped", "error") for task in self.tasks)
        self.bar.set_postfix_str(f"bags {finished}/{len(self.tasks)}", refresh=True)

    def _dispatch(self) -> bool:
        """Send work to every worker with room; False when nothing is left to send."""
        if not any(worker.alive for worker in self.workers):
            raise ToolError(f"all {self.workers_lost} model workers died")
        while True:
            free = [
                i for i, w in enumerate(self.workers) if w.alive and w.in_flight < TASKS_PER_WORKER
            ]
            if not free:
                return True
            call = self._next_call(free[0])
            if call is None:
                return False
            self._send(call)

    def _next_call(self, worker: int) -> Call | None:
        """The next pairs to send: a call to redo first, then the first bag with unread pairs
        (opening the next bag when every open one is read to its end)."""
        while self.retry:
            call = self.retry.popleft()
            if call.task.status == "open":
                call.worker = worker
                return call
        for task in [*self.open, *self.queue]:
            if task.status == "waiting":
                self._open(task)
            if task.status != "open" or task.fusion.read_to_end:
                continue
            batches = self._read_batches(task)
            if batches:
                return Call(task, batches, worker)
        return None

    def _open(self, task: BagTask) -> None:
        self.queue.remove(task)
        # Open from here on, so that Ctrl-C during pass 1 or the output's start cleans up.
        task.status = "open"
        self.open.append(task)
        fusion = task.fusion = BagFusion(self.bag_args(task), prog=PROG, progress=self.bar)
        try:
            fusion.plan()
            self._count(task, len(fusion.pairing.pairs))
            fusion.open_output(self.batch)
        except ToolError as exc:
            self._fail(task, str(exc))

    def _count(self, task: BagTask, pairs: int) -> None:
        """Put a bag's pairs in the progress bar's total in place of what it counted so far."""
        self.bar.total += pairs - task.estimate
        task.estimate = pairs
        self.bar.refresh()

    def _read_batches(self, task: BagTask) -> list[list[PairJob]]:
        """Runs of pairs from pass 2 until a call's worth; may finish the bag."""
        batches: list[list[PairJob]] = []
        while sum(len(b) for b in batches) < self._call_pairs():
            try:
                jobs = task.fusion.next_batch()
            except ToolError as exc:
                self._fail(task, str(exc))
                return []
            if jobs is None:
                self._maybe_commit(task)
                break
            batches.append(jobs)
        return batches

    def _call_pairs(self) -> int:
        """Pairs per call: one --batch run until a call has come back, then as many runs as
        make about CALL_SECONDS of work, at most MAX_PAIRS_PER_CALL pairs."""
        if self.pair_seconds is None:
            return self.batch
        runs = max(1, round(CALL_SECONDS / (self.pair_seconds * self.batch)))
        return max(self.batch, min(runs * self.batch, MAX_PAIRS_PER_CALL))

    def _send(self, call: Call) -> None:
        worker = self.workers[call.worker]
        ref = worker.handle.fuse.remote(call.batches)
        worker.in_flight += 1
        self.calls[ref] = call

    def _collect(self, ref: Any, call: Call) -> None:
        worker = self.workers[call.worker]
        worker.in_flight -= 1
        try:
            results, seconds = ray.get(ref)
        except RayTaskError as exc:  # fuse() itself raised: a fault of the code, not of a pair
            if call.task.status == "open":
                source = call.batches[0][0].source
                self._fail(call.task, f"{source}: a model worker failed: {_cause(exc)}")
            return
        except RayError as exc:  # the worker or its node died (killed, out of memory)
            if isinstance(exc, RayActorError):
                self._lose_worker(call.worker)
            if call.task.status != "open":
                return
            if call.attempts >= MAX_ATTEMPTS:
                first = call.batches[0][0]
                self._fail(
                    call.task,
                    f"{first.source}: {call.attempts} model workers died fusing its pairs "
                    f"{first.seq}..{call.batches[-1][-1].seq}",
                )
                return
            call.attempts += 1
            self.pairs_redone += call.pairs
            self.retry.append(call)
            return
        worker.pairs += call.pairs
        per_pair = seconds / call.pairs
        self.pair_seconds = (
            per_pair if self.pair_seconds is None else 0.8 * self.pair_seconds + 0.2 * per_pair
        )
        if call.task.status != "open":
            return  # its bag failed meanwhile
        try:
            for jobs, fused in zip(call.batches, results, strict=True):
                call.task.fusion.put(jobs, fused)
        except ToolError as exc:
            self._fail(call.task, str(exc))
            return
        self._maybe_commit(call.task)

    def _maybe_commit(self, task: BagTask) -> None:
        fusion = task.fusion
        if task.status != "open" or not fusion.done:
            return
        try:
            fusion.commit()
        except ToolError as exc:
            self._fail(task, str(exc))
            return
        fusion.close()
        fusion.finish("complete")
        task.status = "complete"
        self._finish(task)

    def _fail(self, task: BagTask, error: str) -> None:
        task.status, task.error = "error", error
        if task.fusion is not None:
            task.fusion.close()
            task.fusion.finish("error", error)
            pairs = task.fusion.report["pairs"]
            self._count(task, pairs["fused"] + pairs["skipped"])  # the rest will not come
        self.say(f"error: {error}")
        self._finish(task)

    def _finish(self, task: BagTask) -> None:
        if task in self.open:
            self.open.remove(task)
        if task.fusion is not None:
            self._write_report(task)
        self._bags_postfix()

    def _write_report(self, task: BagTask) -> None:
        try:
            write_report(self.out_dir / (task.name + REPORT_SUFFIX), task.fusion.report)
        except OSError as exc:
            self.say(f"error: cannot write the report of {task.source}: {exc.strerror}")

    def stop(self, status: str, reason: str) -> None:
        """Ctrl-C, or the run cannot go on: remove every output in progress, keep its report;
        the bags not started yet say why."""
        for task in self.tasks:
            if task.status == "waiting":
                task.status, task.error = "not started", "the run stopped before this bag"
        for task in [*self.open]:
            task.status, task.error = status, reason
            task.fusion.close()
            task.fusion.finish(status, reason)
            self.open.remove(task)
            self._write_report(task)

    # -- summary ---------------------------------------------------------------------------

    def say(self, line: str) -> None:
        tqdm.write(f"{PROG}: {line}", file=sys.stderr)

    def summary(self, status: str) -> dict[str, Any]:
        seconds = time.monotonic() - self.started
        fused = sum(
            task.fusion.report["pairs"]["fused"]
            for task in self.tasks
            if task.fusion is not None and task.status == "complete"
        )
        counts: dict[str, int] = {}
        for task in self.tasks:
            counts[task.status] = counts.get(task.status, 0) + 1
        return {
            "status": status,
            "bags": counts,
            "pairs_fused": fused,
            "seconds": round(seconds, 3),
            "pairs_per_s": round(fused / seconds, 3) if seconds > 0 else None,
            "batch": self.batch,
            "workers": [
                {"name": w.name, "alive": w.alive, "pairs": w.pairs, **w.info} for w in self.workers
            ],
            "workers_lost": self.workers_lost,
            "pairs_redone": self.pairs_redone,
            "leftovers": self.leftovers,
            "inputs": [task.entry(self.out_dir) for task in self.tasks],
        }


def _cause(exc: BaseException) -> str:
    """The last line of a Ray error: the worker's own exception, without Ray's traceback (and
    without the class name when it is the package's one-line ToolError)."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    last = lines[-1].strip() if lines else type(exc).__name__
    return last.split(f"{ToolError.__module__}.{ToolError.__name__}: ", 1)[-1]


def summary_text(summary: dict[str, Any]) -> str:
    """The summary's few lines: the totals, then one line per bag not fused in this run."""
    counts = ", ".join(f"{count} {status}" for status, count in sorted(summary["bags"].items()))
    rate = f" ({summary['pairs_per_s']:.2f} pairs/s)" if summary["pairs_per_s"] else ""
    workers = len(summary["workers"])
    lines = [
        f"{PROG}: {summary['status']}: {counts}; {summary['pairs_fused']} pairs fused in "
        f"{summary['seconds']:.1f} s{rate} by {workers} model worker{'s' * (workers != 1)}"
    ]
    if summary["workers_lost"]:
        lines.append(
            f"  {summary['workers_lost']} workers died; {summary['pairs_redone']} of their "
            "pairs were fused again by others"
        )
    for entry in summary["inputs"]:
        if entry["status"] == "skipped":
            lines.append(f"  skipped {entry['input']}: {entry['output']} is complete")
        elif entry["status"] != "complete":
            error = entry["error"]
            named = error if error.startswith(entry["input"]) else f"{entry['input']}: {error}"
            lines.append(f"  {entry['status']}: {named}")
    return "\n".join(lines)


# -- command line --------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Fuse many rosbag2 bags over a Ray cluster (by default the one ray start "
        "started here, else one started in this process): every INPUT becomes OUT_DIR/NAME, "
        "the bag gifnet-fuse-bag writes for it with the same options, plus "
        "OUT_DIR/NAME.report.json and one " + SUMMARY + ".",
        epilog="Exit status: 0 when every bag is fused (or was already), 1 when any is not, "
        "130 when interrupted. A second run skips the bags that are complete.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="INPUT",
        help="rosbag2 directory, .mcap or .db3 file, or a folder searched for them",
    )
    p.add_argument("-o", "--output-dir", type=Path, required=True, help="folder for the outputs")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="fuse again the bags whose output is complete (default: skip them)",
    )
    add_fusion_arguments(p)
    cluster = p.add_argument_group("Ray cluster")
    cluster.add_argument(
        "--address",
        help="the Ray cluster to join: HOST:PORT, ray://HOST:PORT, or auto (RAY_ADDRESS, "
        "else the cluster ray start started or joined on this machine); local starts a private "
        "Ray in this process with this machine's CPUs and GPUs (default: auto where there is "
        "such a cluster, else local)",
    )
    cluster.add_argument(
        "--workers",
        type=int,
        help="model workers (default: one per GPU, else one per CPU, each using --threads CPUs)",
    )
    cluster.add_argument(
        "--gpus-per-worker",
        type=float,
        help="GPUs each model worker reserves, fractions allowed (default: 1 where the "
        "cluster has GPUs, else 0)",
    )
    return p


def _unreachable(address: str) -> str | None:
    """Why nothing answers at a HOST:PORT address (None when something does, or when the
    address is not HOST:PORT: ray:// is Ray's to resolve). ray.init itself would retry for
    minutes, printing warnings."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return None
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _check_reachable(address: str, given: str) -> None:
    """Fail in one line when no cluster answers at ``address``, named as the user gave it."""
    reason = _unreachable(address)
    if reason is not None:
        raise ToolError(f"{given}: no Ray cluster answers there ({reason})")


def _choose_cluster(address: str | None) -> tuple[str | None, str]:
    """Ray's own order for finding a cluster, without its failure modes: the address to give
    ray.init (None: start a private Ray in this process) and how it was found, for the lines
    that name it.

    ``--address HOST:PORT`` or ``ray://`` wins; else ``RAY_ADDRESS``; else the cluster that
    ``ray start`` last started or joined on this machine, which Ray records in its temp dir.
    A record left by a cluster that died without ``ray stop`` would make ray.init fail on every
    run (it joins the dead address, or refuses this tool's CPU count for a "running" cluster):
    without --address the tool starts its own Ray instead and says so; the record is Ray's
    and stays. ``local`` always starts a private Ray.
    """
    if address == "local":
        return None, ""
    if address not in (None, "auto"):
        _check_reachable(address, f"--address {address}")
        return address, f"--address {address}"
    from_env = os.environ.get("RAY_ADDRESS")
    if from_env == "local":
        return None, ""
    if from_env:
        _check_reachable(from_env, f"RAY_ADDRESS={from_env}")
        return from_env, f"RAY_ADDRESS={from_env}"
    record = Path(get_ray_address_file(None))  # in Ray's default temp dir, as ray.init
    try:
        recorded = record.read_text().strip()
    except FileNotFoundError:
        recorded = ""
    except OSError as exc:
        raise ToolError(f"cannot read Ray's record {record}: {exc.strerror}") from None
    if not recorded:  # auto: Ray looks for any cluster running here, or says there is none
        return (None, "") if address is None else ("auto", "--address auto")
    reason = _unreachable(recorded)
    if reason is None:
        return "auto", f"recorded by ray start in {record}"
    if address == "auto":
        raise ToolError(
            f"--address auto: the Ray cluster recorded in {record} at {recorded} is gone "
            f"({reason}); start one with ray start, or leave out --address"
        )
    print(
        f"{PROG}: ignored {record}: the Ray cluster it records at {recorded} is gone ({reason}); "
        "starting a private Ray on this machine",
        file=sys.stderr,
    )
    return None, ""


def _start_ray(address: str | None) -> bool:
    """Join the cluster ``_choose_cluster`` finds, or start Ray here; True when this call
    started or joined it (and so must shut it down)."""
    if ray.is_initialized():
        return False  # an embedding program (or a test) brought its own
    target, found = _choose_cluster(address)
    options: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,  # worker errors reach the driver as exceptions
        "logging_level": logging.WARNING,
        "configure_logging": True,
    }
    if target is None:  # "local": neither RAY_ADDRESS nor Ray's record can redirect it
        options.update(
            address="local", num_cpus=os.cpu_count(), object_store_memory=LOCAL_OBJECT_STORE
        )
    else:  # a joined cluster's resources are its own; --workers etc. apply to the actors
        options.update(address=target)
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        what = "start Ray on this machine" if target is None else f"join the Ray cluster ({found})"
        raise ToolError(f"cannot {what}: {_cause(exc)}") from None
    if target is not None:
        resources = ray.cluster_resources()
        nodes = sum(node["Alive"] for node in ray.nodes())
        print(
            f"{PROG}: joined the Ray cluster at {ray.get_runtime_context().gcs_address} "
            f"({found}): {nodes} node{'s' * (nodes != 1)}, {resources.get('CPU', 0):g} CPUs, "
            f"{resources.get('GPU', 0):g} GPUs",
            file=sys.stderr,
        )
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; 0 when every bag is fused, 1 when any is not, 130 on Ctrl-C."""
    args = parser().parse_args(argv)
    if ray is None:
        print(f"{PROG}: error: Ray is not installed: pip install ray", file=sys.stderr)
        return 1
    out_dir: Path = args.output_dir
    if args.workers is not None and args.workers < 1:
        print(f"{PROG}: error: --workers must be at least 1, got {args.workers}", file=sys.stderr)
        return 1
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"{PROG}: error: {out_dir}: cannot create it: {exc.strerror}", file=sys.stderr)
        return 1
    run = FleetRun(args, find_bags(args.inputs, out_dir))
    status, code, started = "complete", 0, False
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a size limit is an error, as in bag_tool
    interrupt_on_sigterm()
    try:
        run.prepare()
        if run.queue:  # nothing to fuse (all done already) needs neither Ray nor a model
            started = _start_ray(args.address)
            interrupt_on_sigterm()  # again: ray.init installs its own SIGTERM handler
            run.start_workers()
            run.run()
    except ToolError as exc:
        run.stop("error", str(exc))
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        status, code = "error", 1
    except KeyboardInterrupt:
        run.stop("interrupted", "interrupted by the user")
        status, code = "interrupted", 130
    finally:
        for worker in run.workers:
            ray.kill(worker.handle)
        if started:
            ray.shutdown()
    if code == 0 and any(task.status not in ("complete", "skipped") for task in run.tasks):
        status, code = "incomplete", 1
    summary = run.summary(status)
    try:
        write_report(out_dir / SUMMARY, summary)
    except OSError as exc:
        print(f"{PROG}: error: cannot write {out_dir / SUMMARY}: {exc.strerror}", file=sys.stderr)
        code = code or 1
    print(summary_text(summary), file=sys.stderr if code else sys.stdout)
    return code


if __name__ == "__main__":
    sys.exit(main())
