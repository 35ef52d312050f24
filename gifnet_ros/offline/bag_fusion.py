"""Fuse every thermal/RGB pair of a bag: what ``gifnet-fuse-bag`` does, and each bag of
``gifnet-fuse-bags``.

Robotics teams record first and fuse later; this does the later part without a ROS install,
using the node's conversion, alignment, thermal normalisation and engine in the node's order
(``bag_pair_fuser``), so a bag fused offline matches what the live node would have published
for the same pairs.

What it guarantees
------------------
* Pairing by ``header.stamp`` (never by recording time) with ``pairing.pair_by_stamp``:
  globally nearest first within ``--slop``, each message used at most once, deterministic.
* One fused ``sensor_msgs/Image`` per pair, with the RGB message's header (stamp, frame_id),
  recorded at the RGB message's recording time; copied topics are byte-for-byte the input
  messages at their original recording times.
* Nothing half-written (``bag_output``): the bag is renamed to OUTPUT only when complete. An
  existing OUTPUT is replaced only with ``--overwrite``. Ctrl-C or SIGTERM removes the partial
  bag, says how many pairs were fused, and still writes the ``--report``; so does any error (one
  line naming the file or topic). A run killed outright (SIGKILL, out of memory) cannot clean
  up; the next run for the same OUTPUT removes its hidden directory once the process recorded
  in it is gone (``bag_io.remove_dead_partials``).
* Written in read order: every copied message and fused image is written at the point of
  pass 2 where the copy was read or the pair became complete, whether pairs are fused one by
  one, in ``--batch`` runs, or by ``gifnet-fuse-bags``' remote workers; with the same options
  the three write the same bytes.

Memory stays bounded by the pairing's reach, not the bag's length: ``bag_reader`` pairs the
stamps in a first pass and holds a message in the second only until its partner arrives
(the peak is in the report).
"""

from __future__ import annotations

import signal
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rosbags.interfaces import Connection
from tqdm import tqdm

from gifnet_ros.fusion.pairing import PairingResult
from gifnet_ros.offline.bag_io import (
    ToolError,
    check_output,
    interrupt_on_sigterm,
    remove_dead_partials,
)
from gifnet_ros.offline.bag_output import BagOutput, copied_connections
from gifnet_ros.offline.bag_pair_fuser import PairFuser, PairJob, PairResult
from gifnet_ros.offline.bag_reader import (
    CopiedMessage,
    ImageStream,
    PairedBagReader,
    stamp_text,
    topic_name,
)
from gifnet_ros.offline.bag_report import BagReport, SkippedPair, TopicCount, write_report
from gifnet_ros.offline.bag_settings import BagSettings
from gifnet_ros.offline.bag_thermal_pass import ThermalTimeline, thermal_timeline

PROG = "gifnet-fuse-bag"


def progress_bar(total: int, disable: bool) -> tqdm:
    """The bag tools' bar on stderr: pairs done of ``total``, pairs/s, time left, and what
    the caller puts in its postfix."""
    return tqdm(
        total=total,
        unit="pair",
        desc="fusing",
        file=sys.stderr,
        disable=disable,
        dynamic_ncols=True,
        # Always pairs/s (tqdm would switch to s/pair below 1/s, the usual CPU case).
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, "
        "{rate_noinv_fmt}{postfix}]",
    )


class BagFusion:
    """One bag's fusion, in steps a caller can drive: ``plan`` (pass 1, pairing, thermal
    pass), ``open_output``, then ``next_batch`` / ``put`` until ``done``, ``commit``, and
    ``close`` in every case. ``run`` does it all with a local model; gifnet-fuse-bags drives the
    steps itself and fuses on Ray workers. ``report`` is current at every step."""

    def __init__(
        self,
        source: Path,
        output: Path,
        settings: BagSettings,
        overwrite: bool = False,
        prog: str = PROG,
        progress: Any = None,
    ) -> None:
        self.path = Path(source)
        self.output = Path(output)
        self.settings = settings
        self.overwrite = overwrite
        self.prog = prog
        # Something with tqdm's update(n); gifnet-fuse-bags passes its one bar for the run.
        self.progress = progress
        self.started = time.monotonic()
        self.report = BagReport(str(source), str(output), settings=settings)
        self.bag: PairedBagReader | None = None
        self.thermal = self.rgb = ImageStream("", "", [])
        self.copies: list[Connection] = []
        self.pairing = PairingResult((), (), (), ())
        self.timeline = ThermalTimeline([], [])
        self.model_seconds = 0.0
        self.fusion_started: float | None = None
        # Pass 2 and the output (open_output .. commit or abort).
        self._output = BagOutput(self.output, overwrite, settings.storage)
        self._batches: Iterator[list[PairJob]] = iter(())
        self._read_all = False
        # Writes in read order: ("copy", connection, recorded, raw) or ("pair", seq, recorded).
        self._queue: deque[tuple[Any, ...]] = deque()
        self._results: dict[int, PairResult] = {}

    def say(self, line: str) -> None:
        """One line to stderr that does not break a progress bar."""
        tqdm.write(f"{self.prog}: {line}", file=sys.stderr)

    def run(self, show_progress: bool = True) -> None:
        """The whole fusion with a model in this process: plan, fuse in read order, commit."""
        try:
            self.plan()
            fuser = PairFuser(self.settings)
            self.report.timing.model_load_s = fuser.load_seconds
            self.open_output(fuser.batch)
            self.progress = progress_bar(len(self.pairing.pairs), not show_progress)
            with self.progress:
                while (jobs := self.next_batch()) is not None:
                    self.put(jobs, fuser.fuse(jobs))
            self.commit()
        finally:
            self.close()

    def plan(self) -> None:
        """Everything before the first pixel: settings, leftovers, pass 1 and the pairing.

        Raises ToolError; the reader stays open for pass 2 until ``close``.
        """
        settings, report = self.settings, self.report
        settings.check()  # fail before any expensive work
        for line in remove_dead_partials(self.output):
            report.leftovers.append(line)
            self.say(line)
        check_output(self.output, self.overwrite)
        bag = self.bag = PairedBagReader(self.path, say=self.say)
        path = self.path = bag.path
        if path.resolve() == self.output.resolve():
            raise ToolError(f"{path}: input and output are the same")
        report.topics = {
            name: TopicCount(msgtype, count) for name, (msgtype, count) in bag.topics.items()
        }
        bag.select_topics(settings.thermal_topic, settings.rgb_topic)
        self.thermal, self.rgb = bag.thermal, bag.rgb
        fused_topic = topic_name(settings.fused_topic)
        self.copies = copied_connections(path, bag.connections, settings.copy_topics, fused_topic)

        scan_started = time.monotonic()
        bag.scan()
        for stream in (bag.thermal, bag.rgb):
            if stream.topic in report.topics:
                report.topics[stream.topic].messages_read = len(stream.stamps)
        self.pairing = bag.pair(settings.slop, settings.thermal_offset)
        report.record_pairing(self.pairing, self.thermal, self.rgb)
        report.timing.scan_s = round(time.monotonic() - scan_started, 3)
        thermal_started = time.monotonic()
        self.timeline = thermal_timeline(bag, settings)
        report.timing.thermal_pass_s = round(time.monotonic() - thermal_started, 3)

    def close(self) -> None:
        """Close the input; an output still open (an error, Ctrl-C) is removed unwritten."""
        self.abort()
        if self.bag is not None:
            self.bag.close()
            self.bag = None

    # -- pass 2 and the output --------------------------------------------------------------

    def open_output(self, batch: int) -> None:
        """Start the hidden output bag and pass 2, which hands out pairs ``batch`` at a time."""
        # The batch size is part of what made the bag: batched network calls may round
        # differently on some devices.
        self.report.batch = batch
        copy_to = self._output.open(
            self.path,
            self.report.settings_json(),
            self.copies,
            self.rgb.connections[0],
            topic_name(self.settings.fused_topic),
            bool(self.settings.fused_compressed),
        )
        self.fusion_started = time.monotonic()
        self._batches = self._pass2(copy_to, batch)

    def next_batch(self) -> list[PairJob] | None:
        """The next run of consecutive pairs to fuse, None when pass 2 has read the whole bag.

        Reading stops at each run, so at most one run's messages (plus the copies read since
        the oldest unwritten pair) are held, whatever the bag's length.
        """
        jobs = next(self._batches, None)
        if jobs is None:
            self._read_all = True
            self.flush()
        return jobs

    def put(self, jobs: Sequence[PairJob], results: Sequence[PairResult]) -> None:
        """Hand in the results of ``jobs`` and write everything now complete, in read order."""
        for job, result in zip(jobs, results, strict=True):
            self._results[job.seq] = result
        self.flush()

    @property
    def read_to_end(self) -> bool:
        """Pass 2 has handed out every pair of the bag."""
        return self._read_all

    @property
    def done(self) -> bool:
        """Pass 2 has read the whole bag and everything it read is written."""
        return self._read_all and not self._queue

    def flush(self) -> None:
        """Write queued copies and fused pairs up to the first pair still being fused."""
        while self._queue:
            event = self._queue[0]
            if event[0] == "copy":
                _, connection, recorded, raw = event
                self._output.write(connection, recorded, raw)
            else:
                _, seq, recorded = event
                result = self._results.pop(seq, None)
                if result is None:
                    return
                self._write_pair(seq, recorded, result)
            self._queue.popleft()

    def commit(self) -> None:
        """Close the output and move it to OUTPUT; pass 2 must be done."""
        assert self.done, "commit before every pair was written"
        self.report.output_topics = self._output.commit()
        self.report.output_written = True

    def abort(self) -> None:
        """Remove an open output without writing anything to OUTPUT."""
        self._output.abort()
        self._batches = iter(())

    def _write_pair(self, seq: int, recorded: int, result: PairResult) -> None:
        thermal_index, rgb_index = self.pairing.pairs[seq]
        report = self.report
        if result.error is not None:
            if not (self.settings.skip_bad or result.frozen):
                raise ToolError(result.error)
            if result.frozen:
                report.pairs.frozen += 1
            else:
                report.pairs.skipped += 1
            report.skipped.append(
                SkippedPair(
                    self.rgb.stamps[rgb_index], self.thermal.stamps[thermal_index], result.error
                )
            )
        else:
            self._output.write_fused(recorded, result.message, result.compressed)
            self.model_seconds += result.model_seconds
            report.pairs.fused += 1
            report.last_fused_rgb_stamp_ns = self.rgb.stamps[rgb_index]
        if self.progress is not None:
            self.progress.update(1)

    def _pass2(self, copy_to: dict[int, Connection], batch: int) -> Iterator[list[PairJob]]:
        """Read the bag once more in recording order; queue copies and complete pairs in that
        order and yield the pairs ``batch`` at a time (the last run may be shorter)."""
        assert self.bag is not None
        bag, source = self.bag, str(self.path)
        jobs: list[PairJob] = []
        for item in bag.read_pairs(copies=self.copies):
            if isinstance(item, CopiedMessage):
                copy = copy_to[item.connection.id]
                self._queue.append(("copy", copy, item.recorded_ns, item.raw))
                continue
            self._queue.append(("pair", item.seq, item.rgb.recorded_ns))
            self.report.peak_buffered_messages = bag.peak_waiting
            frozen = self._frozen(item.thermal.index, item.rgb.stamp_ns)
            if frozen is not None:
                self._results[item.seq] = PairResult(None, frozen, frozen=True)
                continue
            thermal_range = self.timeline.ranges[item.thermal.index]
            jobs.append(PairJob(item.seq, source, item.thermal, item.rgb, thermal_range))
            if len(jobs) >= batch:
                yield jobs
                jobs = []
        self.report.peak_buffered_messages = bag.peak_waiting
        if jobs:
            yield jobs

    def _frozen(self, thermal_index: int, rgb_stamp: int) -> str | None:
        """Why a pair is not fused because its thermal image repeats the one before (a
        shutter pause), by --freeze-action; None to fuse it (held pairs are counted)."""
        since = self.timeline.frozen_since[thermal_index]
        action = self.settings.freeze_action
        if since is None or action == "ignore":
            return None
        if action == "hold" and rgb_stamp - since <= round(self.settings.freeze_max_age * 1e9):
            self.report.pairs.held += 1
            return None
        return (
            f"{self.path}: {self.thermal.topic} message {thermal_index} repeats the thermal "
            f"image first stamped {stamp_text(since)} (frozen camera; --freeze-action "
            f"{action})"
        )

    def finish(self, status: str, error: str | None = None) -> None:
        """Close the report: status, error, timing and throughput."""
        fusion_s = None
        if self.fusion_started is not None:
            fusion_s = time.monotonic() - self.fusion_started
        self.report.finish(
            status, error, time.monotonic() - self.started, fusion_s, self.model_seconds
        )

    def summary(self) -> str:
        """A few human-readable lines for the end of the run."""
        return self.report.summary(self.prog)


def fuse_bag(
    source: Path,
    output: Path,
    settings: BagSettings,
    overwrite: bool = False,
    report: Path | None = None,
    show_progress: bool = True,
) -> int:
    """gifnet-fuse-bag: fuse ``source`` into ``output``, print the outcome, write the
    ``report``; exit status 0 on success, 1 on an error, 130 when interrupted."""
    interrupt_on_sigterm()
    # A file size limit (ulimit -f) must end in a one-line error and no output, not a core
    # dump: with SIGXFSZ ignored, the write that crosses the limit fails with EFBIG instead.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    fusion = BagFusion(source, output, settings, overwrite)
    code = 0
    try:
        fusion.run(show_progress)
        fusion.finish("complete")
    except ToolError as exc:
        fusion.finish("error", str(exc))
        progress = ""
        if fusion.fusion_started is not None:
            pairs = fusion.report.pairs
            progress = (
                f" (after fusing {pairs.fused} of {pairs.planned} pairs; "
                f"nothing written to {output})"
            )
        print(f"{PROG}: error: {exc}{progress}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        fusion.finish("interrupted", "interrupted by the user")
        print(fusion.summary(), file=sys.stderr)
        code = 130
    else:
        print(fusion.summary())
    if report is not None:
        try:
            write_report(report, fusion.report.to_json())
        except OSError as exc:
            print(
                f"{PROG}: error: cannot write the report {report}: {exc.strerror}",
                file=sys.stderr,
            )
            code = code or 1
    return code
