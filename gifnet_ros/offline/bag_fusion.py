"""``gifnet-fuse-bag`` (``ros2 run gifnet_ros fuse_bag``): fuse every thermal/RGB pair of a bag.

Robotics teams record first and fuse later; this tool does the later part without a ROS
install, using the node's conversion (``conversion``), alignment (``align``), thermal
normalisation (``thermal``) and engine (``engine``) in the node's order, so a bag fused
offline matches what the live node would have published for the same pairs.

What it guarantees
------------------
* Pairing by ``header.stamp`` (never by recording time) with ``pairing.pair_by_stamp``:
  globally nearest first within ``--slop``, each message used at most once, deterministic.
* One fused ``sensor_msgs/Image`` per pair, with the RGB message's header (stamp, frame_id),
  recorded at the RGB message's recording time; copied topics are byte-for-byte the input
  messages at their original recording times.
* Nothing half-written: the bag is written in a hidden directory beside OUTPUT and renamed to
  OUTPUT when complete. An existing OUTPUT is replaced only with ``--overwrite``. Ctrl-C or
  SIGTERM removes the partial bag, says how many pairs were fused, and still writes the
  ``--report``; so does any error (one line naming the file or topic). A run killed outright
  (SIGKILL, out of memory) cannot clean up; the next run for the same OUTPUT removes its
  hidden directory once the process recorded in it is gone (``rosbag_io.remove_dead_partials``).
* Written in read order: every copied message and fused image is written at the point of
  pass 2 where the copy was read or the pair became complete, whether pairs are fused one by
  one, in ``--batch`` runs, or by ``gifnet-fuse-bags``' remote workers; with the same options
  the three write the same bytes.

How it reads the bag (memory stays bounded by the pairing's reach, not the bag's length)
---------------------------------------------------------------------------------------
Pass 1 reads only the 8 stamp bytes after each image message's CDR header, so pairing a
100 000-frame bag needs its stamps, not its pixels. Pass 2 reads the bag once more in
recording order and keeps a message only until its partner arrives: an RGB message whose
thermal partner comes later waits, and a thermal message waits for its RGB partner. With
recording times close to stamps this is a handful of messages; the peak is in the report.
Pass 2 checks that it sees the same messages as pass 1, so a bag changed in between is an
error instead of wrong pairs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import signal
import sqlite3
import statistics
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.interfaces import Connection, ConnectionExtRosbag2, MessageDefinitionFormat
from rosbags.rosbag2 import Writer, WriterError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from tqdm import tqdm

from gifnet_ros.fusion.align import METHODS as ALIGN_METHODS
from gifnet_ros.fusion.align import NO_CROP, Alignment, read_params_alignment, thermal_for_fusion
from gifnet_ros.fusion.conversion import (
    fused_pixels,
)
from gifnet_ros.fusion.engine import FusionEngine
from gifnet_ros.fusion.freeze import FREEZE_ACTIONS
from gifnet_ros.fusion.image_files import write_bytes_atomic
from gifnet_ros.fusion.pairing import PairingResult
from gifnet_ros.fusion.thermal import (
    DEFAULT_TIME_CONSTANT,
    frame_range,
    normalize_thermal,
    smoothed_ranges,
)
from gifnet_ros.models.weights import WeightsError
from gifnet_ros.offline.bag_io import (
    COMPRESSED_IMAGE,
    IMAGE,
    STORAGES,
    ToolError,
    check_output,
    compressed_cdr,
    image_cdr,
    interrupt_on_sigterm,
    open_writer,
    remove_dead_partials,
    staged_output,
    typestore,
)
from gifnet_ros.offline.bag_reader import (
    BagReadError,
    CopiedMessage,
    ImageMessage,
    ImageStream,
    PairedBagReader,
    one_line,
    stamp_text,
    topic_name,
)
from gifnet_ros.offline.engine_args import (
    add_engine_arguments,
    add_thermal_arguments,
    engine_options,
)

PROG = "gifnet-fuse-bag"
FUSED_TOPIC = "/fused/image"
FUSED_ENCODINGS = ("rgb8", "bgr8", "mono8")
DEFAULT_SLOP = 0.05  # the node's sync.slop default


@dataclass(frozen=True)
class PairJob:
    """One pair to fuse; plain data, so that it can travel to a Ray worker."""

    seq: int  # the pair's place in the bag's output order
    source: str  # the bag, for error messages
    thermal: ImageMessage
    rgb: ImageMessage
    thermal_range: tuple[float, float] | None = None
    """The stretch of a 16-bit/float thermal image, smoothed over the bag in stamp order
    (thermal.RangeFilter); None: the --thermal-norm rule on the frame alone."""


@dataclass(frozen=True)
class PairResult:
    """A fused pair: the serialized fused Image, or the one-line reason it could not be fused."""

    message: bytes | None
    error: str | None
    model_seconds: float = 0.0
    compressed: bytes | None = None  # the fused CompressedImage, with --fused-compressed
    frozen: bool = False  # skipped by --freeze-action: reported, not an error


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


def _params_alignment(text: str) -> Alignment:
    """--params-file: the alignment the file sets, read while the flags are parsed, so that a
    bad file is a usage error and remote workers never need the file."""
    try:
        return read_params_alignment(Path(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def use_params_file(args: argparse.Namespace) -> None:
    """Put a --params-file's alignment into --align, --homography and --crop, where the
    report and the fusion read them."""
    if args.params_file is not None:
        alignment, args.params_file = args.params_file, None
        args.align, args.homography = alignment.method, list(alignment.homography)
        args.crop = list(alignment.crop)


def check_settings(args: argparse.Namespace) -> Alignment:
    """The alignment the options ask for, after turning bad alignment, thermal or slop settings
    into a ToolError: checked before any bag is read or model loaded."""
    use_params_file(args)
    try:
        alignment = Alignment.create(args.align, args.homography, args.crop)
        normalize_thermal(
            np.zeros((2, 2), np.uint16),
            args.thermal_norm,
            tuple(args.thermal_percentiles),
            tuple(args.thermal_range),
        )
    except ValueError as exc:
        raise ToolError(one_line(exc)) from None
    if not args.slop >= 0:
        raise ToolError(f"--slop must be >= 0 seconds, got {args.slop}")
    if not (math.isfinite(args.thermal_offset) and abs(args.thermal_offset) <= 60.0):
        raise ToolError(f"--thermal-offset must be within +-60 seconds, got {args.thermal_offset}")
    if not (math.isfinite(args.thermal_time_constant) and args.thermal_time_constant >= 0):
        raise ToolError(
            f"--thermal-time-constant must be >= 0 seconds, got {args.thermal_time_constant}"
        )
    if not args.freeze_max_age > 0:
        raise ToolError(f"--freeze-max-age must be > 0 seconds, got {args.freeze_max_age}")
    if not 1 <= args.jpeg_quality <= 100:
        raise ToolError(f"--jpeg-quality must be 1..100, got {args.jpeg_quality}")
    return alignment


class PairFuser:
    """Serialized thermal/RGB messages in, serialized fused Images out, as the node fuses them.

    Decoding, thermal normalisation, alignment, the engine and the output encoding: the part
    of a bag's fusion that needs the model. gifnet-fuse-bag runs one in its own process and
    gifnet-fuse-bags one in each Ray worker, so the two write the same bytes. The model is
    loaded once, here; a failure is a ToolError.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.alignment = check_settings(args)
        loading = time.monotonic()
        try:
            self.engine = FusionEngine(engine_options(args), mode=args.mode)
        except (ValueError, WeightsError, OSError, RuntimeError) as exc:
            raise ToolError(f"cannot load the model: {one_line(exc)}") from None
        self.load_seconds = round(time.monotonic() - loading, 3)
        self.batch = args.batch or self.engine.default_batch()

    def fuse(self, jobs: Sequence[PairJob]) -> list[PairResult]:
        """One result per job, in order. Consecutive pairs of one size go through the network
        together (``engine.fuse_luminance_batch``); a pair that cannot be decoded, aligned or
        fused gets its reason instead of pixels."""
        results: list[PairResult | None] = [None] * len(jobs)
        run: list[tuple[int, Any, np.ndarray, np.ndarray]] = []
        for position, job in enumerate(jobs):
            try:
                header, thermal, rgb = self._prepare(job)
            except ToolError as exc:
                self._fuse_run(jobs, run, results)
                run = []
                results[position] = PairResult(None, str(exc))
                continue
            if run and _shape(run[0][2], run[0][3]) != _shape(thermal, rgb):
                self._fuse_run(jobs, run, results)
                run = []
            run.append((position, header, thermal, rgb))
        self._fuse_run(jobs, run, results)
        return [result for result in results if result is not None]

    def _prepare(self, job: PairJob) -> tuple[Any, np.ndarray, np.ndarray]:
        """(RGB header, thermal on the RGB grid, RGB pixels) of a pair, or a ToolError."""
        args = self.args
        _, thermal = job.thermal.decode(job.source)
        rgb_msg, rgb = job.rgb.decode(job.source)
        rule, value_range = args.thermal_norm, tuple(args.thermal_range)
        if job.thermal_range is not None:  # the range over time, as the node stretches
            rule, value_range = "fixed", job.thermal_range
        try:
            thermal = thermal_for_fusion(
                thermal,
                rgb.shape,
                self.alignment,
                rule,
                tuple(args.thermal_percentiles),
                value_range,
            )
        except ValueError as exc:
            raise ToolError(f"{_pair_text(job)}: {one_line(exc)}") from None
        return rgb_msg.header, thermal, rgb

    def _fuse_run(
        self,
        jobs: Sequence[PairJob],
        run: list[tuple[int, Any, np.ndarray, np.ndarray]],
        results: list[PairResult | None],
    ) -> None:
        """Fuse pairs of one size in one network call; if that fails, each on its own, so the
        reason lands on the pair that caused it (a device out of memory included)."""
        if not run:
            return
        try:
            fused = self.engine.fuse_luminance_batch([(t, r) for _, _, t, r in run])
        except (ValueError, RuntimeError) as exc:  # sizes; a device out of memory
            if len(run) > 1:
                for item in run:
                    self._fuse_run(jobs, [item], results)
                return
            position = run[0][0]
            results[position] = PairResult(None, f"{_pair_text(jobs[position])}: {one_line(exc)}")
            return
        encoding, compressed = self.args.fused_encoding, self.args.fused_compressed
        seconds = self.engine.last_model_seconds / len(run)
        for (position, header, _, _), (luminance, colour) in zip(run, fused, strict=True):
            pixels = fused_pixels(encoding, luminance, colour)
            message = bytes(image_cdr(header, pixels, encoding))
            packed = None
            if compressed:  # pixels are RGB (or grey) for every encoding
                packed = bytes(compressed_cdr(header, pixels, compressed, self.args.jpeg_quality))
            results[position] = PairResult(message, None, seconds, packed)


def _shape(thermal: np.ndarray, rgb: np.ndarray) -> tuple[Any, ...]:
    """What pairs must share to be fused in one batch."""
    return thermal.shape, thermal.dtype, rgb.shape, rgb.dtype


def _pair_text(job: PairJob) -> str:
    return (
        f"{job.source}: {job.thermal.topic} message {job.thermal.index} with "
        f"{job.rgb.topic} message {job.rgb.index}"
    )


class BagFusion:
    """One run of the tool; ``report`` is filled as the run goes, so it is current on error."""

    def __init__(self, args: argparse.Namespace, prog: str = PROG, progress: Any = None) -> None:
        use_params_file(args)
        self.args = args
        self.prog = prog
        # Something with tqdm's update(n); gifnet-fuse-bags passes its one bar for the run.
        self.progress = progress
        self.started = time.monotonic()
        self.report: dict[str, Any] = {
            "input": str(args.input),
            "output": str(args.output),
            "status": "running",
            "error": None,
            "output_written": False,
            "settings": {
                "thermal_topic": args.thermal_topic,
                "rgb_topic": args.rgb_topic,
                "fused_topic": args.fused_topic,
                "fused_encoding": args.fused_encoding,
                "slop_s": args.slop,
                "storage": args.storage,
                "copy_topics": args.copy_topics,
                "mode": args.mode,
                "backend": args.backend,
                "network": args.network,
                "weights": None if args.weights is None else str(args.weights),
                "device": args.device,
                "precision": args.precision,
                "max_pixels": args.max_pixels,
                "inference_scale": args.inference_scale,
                "restore": args.restore,
                "align": args.align,
                "homography": list(args.homography),
                "crop": list(args.crop),
                "thermal_norm": args.thermal_norm,
                "thermal_percentiles": list(args.thermal_percentiles),
                "thermal_range": list(args.thermal_range),
                "thermal_time_constant_s": args.thermal_time_constant,
                "thermal_offset_s": args.thermal_offset,
                "freeze_action": args.freeze_action,
                "freeze_max_age_s": args.freeze_max_age,
                "fused_compressed": args.fused_compressed,
                "jpeg_quality": args.jpeg_quality,
            },
            "topics": {},
            "pairs": {"planned": 0, "fused": 0, "skipped": 0, "frozen": 0, "held": 0},
            "unpaired_rgb": {"count": 0, "stamps_ns": []},
            "unpaired_thermal": {"count": 0, "stamps_ns": []},
            "stamp_difference_ms": None,
            "skipped": [],
            "last_fused_rgb_stamp_ns": None,
            "peak_buffered_messages": 0,
            "leftovers": [],
            "output_topics": {},
            "timing": {},
        }
        self.path = Path(args.input)
        self.bag: PairedBagReader | None = None
        self.thermal = self.rgb = ImageStream("", "", [])
        self.copies: list[Connection] = []
        self.fused_topic = topic_name(args.fused_topic)
        self.pairing = PairingResult((), (), (), ())
        self.thermal_ranges: list[tuple[float, float] | None] = []
        self.frozen_since: list[int | None] = []  # per thermal message, see _thermal_pass
        self.model_seconds = 0.0
        self.fusion_started: float | None = None
        # Pass 2 and the output (open_output .. commit or abort).
        self._output = ExitStack()
        self._writer: Writer | None = None
        self._fused_connection: Connection | None = None
        self._compressed_connection: Connection | None = None
        self._batches: Iterator[list[PairJob]] = iter(())
        self._read_all = False
        # Writes in read order: ("copy", connection, recorded, raw) or ("pair", seq, recorded).
        self._queue: deque[tuple[Any, ...]] = deque()
        self._results: dict[int, PairResult] = {}

    # -- the run ---------------------------------------------------------------------------

    def say(self, line: str) -> None:
        """One line to stderr that does not break a progress bar."""
        tqdm.write(f"{self.prog}: {line}", file=sys.stderr)

    def run(self) -> None:
        """The whole of gifnet-fuse-bag: plan, load the model, fuse in read order, commit."""
        self.plan()
        try:
            fuser = PairFuser(self.args)
            self.report["timing"]["model_load_s"] = fuser.load_seconds
            self.open_output(fuser.batch)
            with self._bar():
                while (jobs := self.next_batch()) is not None:
                    self.put(jobs, fuser.fuse(jobs))
            self.commit()
        finally:
            self.close()

    def plan(self) -> None:
        """Everything before the first pixel: settings, leftovers, pass 1 and the pairing.

        Raises ToolError; the reader stays open for pass 2 until ``close``.
        """
        args = self.args
        check_settings(args)  # fail before any expensive work
        for line in remove_dead_partials(args.output):
            self.report["leftovers"].append(line)
            self.say(line)
        check_output(args.output, args.overwrite)
        bag = self.bag = PairedBagReader(self.path, args.thermal_topic, args.rgb_topic, self.say)
        path = self.path = bag.path
        if path.resolve() == args.output.resolve():
            raise ToolError(f"{path}: input and output are the same")
        self.report["topics"] = {
            name: {"type": msgtype, "messages": count}
            for name, (msgtype, count) in bag.topics.items()
        }
        self.thermal, self.rgb = bag.thermal, bag.rgb
        self.copies = self._copy_connections(path, bag.connections, self.fused_topic)

        scan_started = time.monotonic()
        bag.scan()
        for stream in (bag.thermal, bag.rgb):
            if stream.topic in self.report["topics"]:
                self.report["topics"][stream.topic]["messages_read"] = len(stream.stamps)
        self.pairing = bag.pair(args.slop, args.thermal_offset)
        self._report_pairing(self.pairing, self.thermal, self.rgb)
        self.report["timing"]["scan_s"] = round(time.monotonic() - scan_started, 3)
        thermal_started = time.monotonic()
        self._thermal_pass(bag)
        self.report["timing"]["thermal_pass_s"] = round(time.monotonic() - thermal_started, 3)

    def _thermal_pass(self, bag: PairedBagReader) -> None:
        """Read the thermal images once for what depends on their order in time, as the node
        sees it live: frozen frames (the same pixels as the frame before, by stamp) and the
        stretch of 16-bit/float images smoothed over --thermal-time-constant. Each image
        costs a decode and a digest; only a few numbers per image are kept."""
        args = self.args
        stretch = args.thermal_norm == "percentile" and args.thermal_time_constant > 0
        count = len(self.thermal.stamps)
        self.thermal_ranges = [None] * count
        self.frozen_since = [None] * count
        if args.freeze_action == "ignore" and not stretch:
            return
        digests: list[bytes | None] = [None] * count
        frames: list[tuple[float, float] | None] = [None] * count
        stretched = [False] * count
        for image in bag.images(bag.thermal):
            index = image.index
            try:
                _, pixels = image.decode(str(bag.path))
            except BagReadError:
                continue  # fusing this pair reports it (--skip-bad), as without this pass
            digests[index] = hashlib.blake2b(pixels.tobytes(), digest_size=16).digest()
            if stretch and pixels.dtype != np.uint8 and pixels.ndim == 2:
                stretched[index] = True
                frames[index] = frame_range(pixels, tuple(args.thermal_percentiles))
        stamps = bag.thermal_stamps(args.thermal_offset)
        previous: bytes | None = None
        since = 0
        for index in sorted(range(count), key=stamps.__getitem__):
            digest = digests[index]
            if digest is not None and digest == previous:
                self.frozen_since[index] = since
            else:
                previous, since = digest, stamps[index]
        if any(stretched):
            ranges = smoothed_ranges(
                [(stamp, frame) for stamp, frame in zip(stamps, frames, strict=True)],
                args.thermal_time_constant,
            )
            self.thermal_ranges = [
                value if flag else None for value, flag in zip(ranges, stretched, strict=True)
            ]

    def close(self) -> None:
        """Close the input; an output still open (an error, Ctrl-C) is removed unwritten."""
        self.abort()
        if self.bag is not None:
            self.bag.close()
            self.bag = None

    def _bar(self) -> tqdm:
        self.progress = progress_bar(len(self.pairing.pairs), self.args.no_progress)
        return self.progress

    # -- input -----------------------------------------------------------------------------

    def _copy_connections(
        self, path: Path, connections: list[Connection], fused_topic: str
    ) -> list[Connection]:
        spec = self.args.copy_topics.strip()
        if spec == "none":
            selected: list[Connection] = []
        elif spec == "all":
            selected = list(connections)
        else:
            names = [topic_name(n.strip()) for n in spec.split(",") if n.strip()]
            known = {c.topic for c in connections}
            missing = [n for n in names if n not in known]
            if missing:
                raise ToolError(
                    f"{path}: --copy-topics names topic(s) not in the bag: {', '.join(missing)}; "
                    f"topics in the bag: {', '.join(sorted(known)) or 'none'}"
                )
            selected = [c for c in connections if c.topic in names]
        if any(c.topic == fused_topic for c in selected):
            raise ToolError(
                f"{path}: the fused topic {fused_topic} is also a copied input topic; "
                "choose another --fused-topic or leave it out of --copy-topics"
            )
        return selected

    def _report_pairing(
        self, pairing: PairingResult, thermal: ImageStream, rgb: ImageStream
    ) -> None:
        report = self.report
        report["pairs"]["planned"] = len(pairing.pairs)
        for key, stream, unpaired in (
            ("unpaired_rgb", rgb, pairing.unpaired_rgb),
            ("unpaired_thermal", thermal, pairing.unpaired_thermal),
        ):
            report[key] = {
                "count": len(unpaired),
                "stamps_ns": [stream.stamps[i] for i in unpaired],
            }
        diffs = pairing.differences_ns
        if diffs:
            report["stamp_difference_ms"] = {
                "median": statistics.median(diffs) / 1e6,
                "median_abs": statistics.median(abs(d) for d in diffs) / 1e6,
                "max_abs": max(abs(d) for d in diffs) / 1e6,
            }

    # -- pass 2 and the output --------------------------------------------------------------

    def open_output(self, batch: int) -> None:
        """Start the hidden output bag and pass 2, which hands out pairs ``batch`` at a time."""
        args = self.args
        # The batch size is part of what made the bag: batched network calls may round
        # differently on some devices.
        self.report["settings"]["batch"] = batch
        with self._writing():
            staging = self._output.enter_context(staged_output(args.output, args.overwrite))
            writer = self._writer = self._output.enter_context(open_writer(staging, args.storage))
            writer.set_custom_data("gifnet_ros.source", str(self.path))
            writer.set_custom_data(
                "gifnet_ros.settings", json.dumps(self.report["settings"], sort_keys=True)
            )
            copy_to = self._add_connections(writer)
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
        with self._writing():
            while self._queue:
                event = self._queue[0]
                if event[0] == "copy":
                    _, connection, recorded, raw = event
                    self._writer.write(connection, recorded, raw)
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
        writer = self._writer
        with self._writing():
            self._output.close()  # closes the writer, then renames the bag to OUTPUT
        self.report["output_topics"] = {
            conn.topic: writer.counts[conn.id] for conn in writer.connections
        }
        self.report["output_written"] = True

    def abort(self) -> None:
        """Remove an open output without writing anything to OUTPUT."""
        self._output.__exit__(ToolError, ToolError("aborted"), None)
        self._batches = iter(())

    @contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except (OSError, sqlite3.Error, WriterError) as exc:  # a full disk, a size limit
            raise ToolError(
                f"{self.args.output}: writing the bag failed: {one_line(exc)}"
            ) from None

    def _write_pair(self, seq: int, recorded: int, result: PairResult) -> None:
        thermal_index, rgb_index = self.pairing.pairs[seq]
        if result.error is not None:
            if not (self.args.skip_bad or result.frozen):
                raise ToolError(result.error)
            self.report["pairs"]["frozen" if result.frozen else "skipped"] += 1
            self.report["skipped"].append(
                {
                    "rgb_stamp_ns": self.rgb.stamps[rgb_index],
                    "thermal_stamp_ns": self.thermal.stamps[thermal_index],
                    "reason": result.error,
                }
            )
        else:
            self._writer.write(self._fused_connection, recorded, result.message)
            if result.compressed is not None:
                self._writer.write(self._compressed_connection, recorded, result.compressed)
            self.model_seconds += result.model_seconds
            self.report["pairs"]["fused"] += 1
            self.report["last_fused_rgb_stamp_ns"] = self.rgb.stamps[rgb_index]
        if self.progress is not None:
            self.progress.update(1)

    def _add_connections(self, writer: Writer) -> dict[int, Connection]:
        """The output's connections: copied topics as the input has them, then the fused one."""
        outputs: dict[tuple[str, str, str], Connection] = {}
        copy_to: dict[int, Connection] = {}
        for conn in self.copies:
            key = (conn.topic, conn.msgtype, repr(conn.ext))
            if key not in outputs:
                msgdef, digest = self._definition(self.path, conn)
                outputs[key] = writer.add_connection(
                    conn.topic,
                    conn.msgtype,
                    msgdef=msgdef,
                    rihs01=digest,
                    offered_qos_profiles=self._qos(conn),
                )
            copy_to[conn.id] = outputs[key]
        qos = self._qos(self.rgb.connections[0])
        self._fused_connection = writer.add_connection(
            self.fused_topic, IMAGE, typestore=typestore(), offered_qos_profiles=qos
        )
        if self.args.fused_compressed:  # image_transport's name for the compressed stream
            self._compressed_connection = writer.add_connection(
                self.fused_topic + "/compressed",
                COMPRESSED_IMAGE,
                typestore=typestore(),
                offered_qos_profiles=qos,
            )
        return copy_to

    def _pass2(self, copy_to: dict[int, Connection], batch: int) -> Iterator[list[PairJob]]:
        """Read the bag once more in recording order; queue copies and complete pairs in that
        order and yield the pairs ``batch`` at a time (the last run may be shorter)."""
        assert self.bag is not None
        source = str(self.path)
        jobs: list[PairJob] = []
        for item in self.bag.read_pairs(copies=self.copies):
            if isinstance(item, CopiedMessage):
                copy = copy_to[item.connection.id]
                self._queue.append(("copy", copy, item.recorded_ns, item.raw))
                continue
            self._queue.append(("pair", item.seq, item.rgb.recorded_ns))
            self.report["peak_buffered_messages"] = self.bag.peak_waiting
            frozen = self._frozen(item.thermal.index, item.rgb.stamp_ns)
            if frozen is not None:
                self._results[item.seq] = PairResult(None, frozen, frozen=True)
                continue
            thermal_range = self.thermal_ranges[item.thermal.index]
            jobs.append(PairJob(item.seq, source, item.thermal, item.rgb, thermal_range))
            if len(jobs) >= batch:
                yield jobs
                jobs = []
        self.report["peak_buffered_messages"] = self.bag.peak_waiting
        if jobs:
            yield jobs

    def _frozen(self, thermal_index: int, rgb_stamp: int) -> str | None:
        """Why a pair is not fused because its thermal image repeats the one before (a
        shutter pause), by --freeze-action; None to fuse it (held pairs are counted)."""
        since = self.frozen_since[thermal_index]
        action = self.args.freeze_action
        if since is None or action == "ignore":
            return None
        if action == "hold" and rgb_stamp - since <= round(self.args.freeze_max_age * 1e9):
            self.report["pairs"]["held"] += 1
            return None
        return (
            f"{self.path}: {self.thermal.topic} message {thermal_index} repeats the thermal "
            f"image first stamped {stamp_text(since)} (frozen camera; --freeze-action "
            f"{action})"
        )

    @staticmethod
    def _qos(conn: Connection) -> list[Any]:
        ext = conn.ext
        return list(ext.offered_qos_profiles) if isinstance(ext, ConnectionExtRosbag2) else []

    @staticmethod
    def _definition(path: Path, conn: Connection) -> tuple[str, str]:
        """Message definition and RIHS01 hash for a copied topic, as the input has them.

        MCAP files carry the definition but no hash, so the hash is computed from the
        definition; bags without definitions fall back to the standard ROS 2 types.
        """
        msgdef = conn.msgdef.data if conn.msgdef.format != MessageDefinitionFormat.NONE else ""
        if msgdef and conn.digest:
            return msgdef, conn.digest
        if msgdef and conn.msgdef.format == MessageDefinitionFormat.MSG:
            try:
                store = get_typestore(Stores.EMPTY)
                store.register(get_types_from_msg(msgdef, conn.msgtype))
                return msgdef, store.hash_rihs01(conn.msgtype)
            except Exception as exc:  # rosbags' parser errors have no common base
                raise ToolError(
                    f"{path}: cannot parse the definition of {conn.msgtype} on {conn.topic}: "
                    f"{one_line(exc)}"
                ) from None
        store = typestore()
        if conn.msgtype in store.fielddefs:
            return store.generate_msgdef(conn.msgtype, ros_version=2)[0], store.hash_rihs01(
                conn.msgtype
            )
        raise ToolError(
            f"{path}: topic {conn.topic} has type {conn.msgtype} without a definition in the "
            "bag, so it cannot be copied; leave it out of --copy-topics"
        )

    # -- report ----------------------------------------------------------------------------

    def finish(self, status: str, error: str | None = None) -> None:
        """Close the report: status, error, timing and throughput."""
        report = self.report
        report["status"] = status
        report["error"] = error
        timing = report["timing"]
        timing["total_s"] = round(time.monotonic() - self.started, 3)
        if self.fusion_started is not None:
            fusion_s = time.monotonic() - self.fusion_started
            fused = report["pairs"]["fused"]
            timing["fusion_s"] = round(fusion_s, 3)
            timing["model_s"] = round(self.model_seconds, 3)
            timing["pairs_per_s"] = round(fused / fusion_s, 3) if fusion_s > 0 else None
            timing["model_share"] = round(self.model_seconds / fusion_s, 3) if fusion_s else None

    def summary(self) -> str:
        """A few human-readable lines for the end of the run."""
        report = self.report
        pairs = report["pairs"]
        lines = [
            f"{PROG}: {report['status']}: fused {pairs['fused']} of {pairs['planned']} pairs"
            + (f", skipped {pairs['skipped']}" if pairs["skipped"] else "")
            + (f", {pairs['frozen']} with a frozen thermal image" if pairs["frozen"] else "")
            + (
                f" -> {report['output']}"
                if report["output_written"]
                else f"; nothing written to {report['output']}"
            ),
        ]
        if report["last_fused_rgb_stamp_ns"] is not None and not report["output_written"]:
            lines.append(
                f"  got as far as RGB stamp {stamp_text(report['last_fused_rgb_stamp_ns'])}"
            )
        counts = report["topics"]
        for key, name in (("unpaired_rgb", "rgb_topic"), ("unpaired_thermal", "thermal_topic")):
            topic = topic_name(report["settings"][name])
            if topic in counts:
                lines.append(
                    f"  {topic}: {counts[topic]['messages']} messages, "
                    f"{report[key]['count']} unpaired"
                )
        diff = report["stamp_difference_ms"]
        if diff:
            lines.append(
                f"  stamp difference thermal - RGB: median {diff['median']:.3f} ms, "
                f"max |difference| {diff['max_abs']:.3f} ms"
            )
        timing = report["timing"]
        if timing.get("pairs_per_s"):
            lines.append(
                f"  throughput {timing['pairs_per_s']:.2f} pairs/s; the model took "
                f"{100 * (timing['model_share'] or 0):.0f}% of the fusion time"
            )
        return "\n".join(lines)


def add_fusion_arguments(p: argparse.ArgumentParser) -> None:
    """The options that say how a bag is fused (topics, output bag, alignment, engine): one
    definition for gifnet-fuse-bag and gifnet-fuse-bags, so they mean the same in both."""
    p.add_argument("--thermal-topic", required=True, help="Image or CompressedImage topic")
    p.add_argument("--rgb-topic", required=True, help="Image or CompressedImage topic")
    p.add_argument("--fused-topic", default=FUSED_TOPIC, help="default %(default)s")
    p.add_argument(
        "--fused-encoding",
        choices=FUSED_ENCODINGS,
        default="rgb8",
        help="mono8 writes the fused luminance (default %(default)s)",
    )
    p.add_argument(
        "--slop",
        type=float,
        default=DEFAULT_SLOP,
        help="largest stamp difference in seconds of a pair (default %(default)s)",
    )
    p.add_argument(
        "--thermal-offset",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="added to every thermal stamp before pairing, as the node's sync.thermal_offset "
        "(a host-stamped thermal camera that lags by L s needs -L; gifnet-sync-offset BAG "
        "estimates it); the fused image keeps the RGB header (default %(default)s)",
    )
    p.add_argument(
        "--thermal-time-constant",
        type=float,
        default=DEFAULT_TIME_CONSTANT,
        metavar="SECONDS",
        help="the percentile stretch of 16-bit/float thermal follows the scene over this "
        "time, in stamp order, as the node's thermal.time_constant; 0: each frame on its own "
        "(default %(default)s)",
    )
    p.add_argument(
        "--freeze-action",
        choices=FREEZE_ACTIONS,
        default="skip",
        help="a thermal image that repeats the one before (a shutter pause): skip the pair "
        "(reported), hold (fuse it while at most --freeze-max-age old), or ignore; as the "
        "node's thermal.freeze_action (default %(default)s)",
    )
    p.add_argument(
        "--freeze-max-age",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="--freeze-action hold: oldest repeated thermal image fused (default %(default)s)",
    )
    p.add_argument(
        "--fused-compressed",
        choices=("jpeg", "png"),
        default=None,
        help="also write FUSED_TOPIC/compressed (sensor_msgs/CompressedImage), as "
        "image_transport's compressed transport would",
    )
    p.add_argument(
        "--jpeg-quality",
        type=int,
        default=95,
        help="JPEG quality of --fused-compressed jpeg, 1..100 (default %(default)s)",
    )
    p.add_argument(
        "--storage",
        choices=tuple(STORAGES),
        default="mcap",
        help="storage of the output bag (default %(default)s; on Humble, playing "
        "mcap needs ros-humble-rosbag2-storage-mcap)",
    )
    p.add_argument(
        "--copy-topics",
        default="all",
        metavar="all|none|LIST",
        help="input topics copied unchanged: all (default), none, or a comma-separated list",
    )
    p.add_argument("--mode", choices=FusionEngine.MODES, default="thermal_rgb")
    p.add_argument(
        "--align",
        choices=ALIGN_METHODS,
        default="resize",
        help="put the thermal image on the RGB grid as the node does (default %(default)s)",
    )
    p.add_argument(
        "--homography",
        type=float,
        nargs=9,
        metavar="H",
        default=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        help="3x3 row-major thermal->RGB pixel mapping for --align homography",
    )
    p.add_argument(
        "--crop",
        type=int,
        nargs=4,
        metavar=("X", "Y", "W", "H"),
        default=NO_CROP,
        help="cut this box from the thermal image first, as the node's align.crop (default none)",
    )
    p.add_argument(
        "--params-file",
        type=_params_alignment,
        metavar="YAML",
        help="take align.method, align.homography and align.crop from a node parameter file "
        "(e.g. gifnet-calibrate's output) instead of --align, --homography and --crop",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip (and report) pairs with an undecodable image instead of stopping",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_engine_arguments(p)
    add_thermal_arguments(p)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Fuse every thermal/RGB pair of a rosbag2 (directory, .mcap or .db3) with "
        "GIFNet and write a new bag with the fused images (sensor_msgs/Image) and the copied "
        "input topics. Pairs by header.stamp: nearest first within --slop, each message at "
        "most once.",
        epilog="Exit status: 0 when the bag is complete, 1 on an error, 130 when interrupted; "
        "on 1 and 130 nothing is written to OUTPUT (the --report is written in every case).",
    )
    p.add_argument("input", type=Path, help="rosbag2 directory or a single .mcap / .db3 file")
    p.add_argument("-o", "--output", type=Path, required=True, help="bag directory to create")
    p.add_argument("--report", type=Path, help="also write the report as JSON to this file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT bag")
    add_fusion_arguments(p)
    return p


def write_report(path: Path, report: dict[str, Any]) -> None:
    """A run's report as JSON, atomically: a reader never finds half of it."""
    write_bytes_atomic(path, (json.dumps(report, indent=2) + "\n").encode())


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; exit status 0 on success, 1 on an error, 130 when interrupted."""
    args = parser().parse_args(argv)
    interrupt_on_sigterm()
    # A file size limit (ulimit -f) must end in a one-line error and no output, not a core
    # dump: with SIGXFSZ ignored, the write that crosses the limit fails with EFBIG instead.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    fusion = BagFusion(args)
    code = 0
    try:
        fusion.run()
        fusion.finish("complete")
    except ToolError as exc:
        fusion.finish("error", str(exc))
        progress = ""
        if fusion.fusion_started is not None:
            pairs = fusion.report["pairs"]
            progress = (
                f" (after fusing {pairs['fused']} of {pairs['planned']} pairs; "
                f"nothing written to {args.output})"
            )
        print(f"{PROG}: error: {exc}{progress}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        fusion.finish("interrupted", "interrupted by the user")
        print(fusion.summary(), file=sys.stderr)
        code = 130
    else:
        print(fusion.summary())
    if args.report is not None:
        try:
            write_report(args.report, fusion.report)
        except OSError as exc:
            print(
                f"{PROG}: error: cannot write the report {args.report}: {exc.strerror}",
                file=sys.stderr,
            )
            code = code or 1
    return code


if __name__ == "__main__":
    sys.exit(main())
