"""Fuse many bags over Ray: what ``gifnet-fuse-bags`` (``ros2 run gifnet_ros fuse_bags``) does.

A season of drives is thousands of bags, and GIFNet costs seconds per pair on a CPU; this tool
spreads the pairs over every model worker of a Ray cluster (or of this machine, where Ray is
started in-process) and writes, for every input, the bag ``gifnet-fuse-bag`` would write for
it with the same options, byte for byte.

Which cluster: Ray's own order, see ``fleet_cluster``.

How the work is split
---------------------
* A worker is a Ray actor that loads the model once (``bag_pair_fuser.PairFuser``) and fuses what it
  is sent: runs of ``--batch`` consecutive pairs, as many runs per call as make about
  ``CALL_SECONDS`` of work (one run when a pair takes longer: the last pairs of a bag then
  spread evenly; several for a fast rule, where a call's ~1 ms would otherwise dominate),
  never more than ``MAX_PAIRS_PER_CALL`` pairs. Each worker has at most ``TASKS_PER_WORKER``
  calls in flight (one running, one waiting), so the pairs held anywhere are bounded by the
  number of workers, not by the bags' lengths.
* This process (the driver) reads the bags and writes the outputs: ``bag_fusion``'s two passes and
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
* Outputs appear under their final names only when complete (``bag_io.staged_output``),
  each with ``NAME.report.json`` beside it. A second run skips a bag whose output and report
  are complete and were made with the same settings, redoes one that was interrupted, and
  removes the hidden folders of runs that were killed (``bag_io.remove_dead_partials``).
* Ctrl-C or SIGTERM removes the bags in progress, writes the reports and the summary, and
  exits with 130.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from gifnet_ros.offline.bag_fusion import BagFusion, progress_bar
from gifnet_ros.offline.bag_io import ToolError, interrupt_on_sigterm, remove_dead_partials
from gifnet_ros.offline.bag_pair_fuser import PairFuser, PairJob, PairResult
from gifnet_ros.offline.bag_report import write_report
from gifnet_ros.offline.bag_settings import BagSettings
from gifnet_ros.offline.fleet_bags import REPORT_SUFFIX, BagTask, estimate_pairs, find_bags
from gifnet_ros.offline.fleet_cluster import PROG, ray, ray_cause, start_ray
from gifnet_ros.offline.fleet_summary import FleetSummary, WorkerEntry, WorkerInfo

if ray is not None:
    from ray.exceptions import RayActorError, RayError, RayTaskError

SUMMARY = "fuse_bags_summary.json"
CALL_SECONDS = 0.05  # work per call aimed at, once the workers' time per pair is known
MAX_PAIRS_PER_CALL = 32
TASKS_PER_WORKER = 2  # calls in flight per worker: one being fused, one waiting
MAX_ATTEMPTS = 3  # workers a call may kill before its bag is given up


@dataclass(frozen=True)
class FleetSettings:
    """One run of gifnet-fuse-bags: which bags, where to, how each is fused, on what."""

    inputs: tuple[Path, ...]  # bags, or folders searched for them
    output_dir: Path
    bag: BagSettings
    overwrite: bool = False  # fuse again the bags whose output is complete
    address: str | None = None  # the Ray cluster (fleet_cluster.choose_cluster)
    workers: int | None = None  # None: one per GPU, else one per CPU
    gpus_per_worker: float | None = None  # None: 1 where the cluster has GPUs, else 0
    progress: bool = True


class BagFusionActor:
    """A model worker: one PairFuser (one loaded model) for its whole life. Started as a Ray
    actor (``ray.remote(BagFusionActor)``), so that this module imports without Ray."""

    def __init__(self, settings: BagSettings) -> None:
        self.fuser = PairFuser(settings)

    def describe(self) -> WorkerInfo:
        """Where the model runs and how: for the summary and the driver's batch size."""
        engine = self.fuser.engine
        return WorkerInfo(
            host=socket.gethostname(),
            pid=os.getpid(),
            device=str(engine.device),
            precision=engine.precision,
            batch=self.fuser.batch,
            model_load_s=self.fuser.load_seconds,
        )

    def fuse(self, batches: list[list[PairJob]]) -> tuple[list[list[PairResult]], float]:
        """Each run's results, and the seconds they took here (for the driver's call size)."""
        started = time.perf_counter()
        results = [self.fuser.fuse(jobs) for jobs in batches]
        return results, time.perf_counter() - started


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
    info: WorkerInfo | None = None


# -- the run -------------------------------------------------------------------------------


class FleetRun:
    """One run of gifnet-fuse-bags over the tasks, on Ray workers."""

    def __init__(self, settings: FleetSettings, tasks: list[BagTask]) -> None:
        self.settings = settings
        self.out_dir = settings.output_dir
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
            if not self.settings.overwrite:
                self._check_done(task)
            if task.status == "waiting":
                task.estimate = estimate_pairs(task, self.settings.bag)
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
        settings = self.settings.bag.report_json()
        # Without --batch, the batch follows the workers' device: a bag fused on a CPU
        # (batch 1) is not redone because GPUs (batch 8) are at hand now.
        settings["batch"] = self.settings.bag.batch or before.get("batch")
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
        bag, engine = self.settings.bag, self.settings.bag.engine
        gpus = self.settings.gpus_per_worker
        if gpus is None:
            gpus = 1.0 if resources.get("GPU", 0) >= 1 and engine.device != "cpu" else 0.0
        cpus = 1 if gpus else (engine.threads or 1)
        count = self.settings.workers
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
        threads = engine.threads or (None if gpus else cpus)
        self._worker_settings = replace(bag, engine=replace(engine, threads=threads))
        self._options = {"num_cpus": cpus, "num_gpus": gpus, "max_restarts": 0}
        self.initial_workers = count
        for _ in range(count):
            self._add_worker()
        for worker in self.workers:
            try:
                worker.info = ray.get(worker.handle.describe.remote())
            except RayActorError as exc:
                raise ToolError(f"a model worker failed to start: {ray_cause(exc)}") from None
        self.batch = bag.batch or self.workers[0].info.batch

    def _add_worker(self) -> None:
        name = f"{PROG}-{self.run_id}-{len(self.workers)}"
        actor = ray.remote(BagFusionActor)
        handle = actor.options(name=name, **self._options).remote(self._worker_settings)
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
        with progress_bar(total, not self.settings.progress) as bar:
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
        fusion = task.fusion = BagFusion(
            task.source,
            self.out_dir / task.name,
            self.settings.bag,
            overwrite=True,  # an output without a complete report is redone
            prog=PROG,
            progress=self.bar,
        )
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
                self._fail(call.task, f"{source}: a model worker failed: {ray_cause(exc)}")
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
            pairs = task.fusion.report.pairs
            self._count(task, pairs.fused + pairs.skipped)  # the rest will not come
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
            write_report(self.out_dir / (task.name + REPORT_SUFFIX), task.fusion.report.to_json())
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

    def summary(self, status: str) -> FleetSummary:
        seconds = time.monotonic() - self.started
        fused = sum(
            task.fusion.report.pairs.fused
            for task in self.tasks
            if task.fusion is not None and task.status == "complete"
        )
        counts: dict[str, int] = {}
        for task in self.tasks:
            counts[task.status] = counts.get(task.status, 0) + 1
        return FleetSummary(
            status=status,
            bags=counts,
            pairs_fused=fused,
            seconds=round(seconds, 3),
            pairs_per_s=round(fused / seconds, 3) if seconds > 0 else None,
            batch=self.batch,
            workers=[WorkerEntry(w.name, w.alive, w.pairs, w.info) for w in self.workers],
            workers_lost=self.workers_lost,
            pairs_redone=self.pairs_redone,
            leftovers=self.leftovers,
            inputs=[task.entry(self.out_dir) for task in self.tasks],
        )


def fuse_bags(settings: FleetSettings) -> int:
    """gifnet-fuse-bags: fuse every bag of the inputs, write each report and the run's
    summary, print the summary; 0 when every bag is fused, 1 when any is not, 130 on Ctrl-C."""
    if ray is None:
        print(f"{PROG}: error: Ray is not installed: pip install ray", file=sys.stderr)
        return 1
    out_dir = settings.output_dir
    if settings.workers is not None and settings.workers < 1:
        print(
            f"{PROG}: error: --workers must be at least 1, got {settings.workers}",
            file=sys.stderr,
        )
        return 1
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"{PROG}: error: {out_dir}: cannot create it: {exc.strerror}", file=sys.stderr)
        return 1
    run = FleetRun(settings, find_bags(settings.inputs, out_dir))
    status, code, started = "complete", 0, False
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a size limit is an error, as in bag_fusion
    interrupt_on_sigterm()
    try:
        run.prepare()
        if run.queue:  # nothing to fuse (all done already) needs neither Ray nor a model
            started = start_ray(settings.address)
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
        write_report(out_dir / SUMMARY, summary.to_json())
    except OSError as exc:
        print(f"{PROG}: error: cannot write {out_dir / SUMMARY}: {exc.strerror}", file=sys.stderr)
        code = code or 1
    print(summary.text(PROG), file=sys.stderr if code else sys.stdout)
    return code
