"""Thermal/RGB image pairs of a rosbag2, paired by ``header.stamp``, read in two passes.

Every tool that takes pairs from a bag (gifnet-fuse-bag, gifnet-fuse-bags, gifnet-calibrate,
gifnet-demo) reads them here, so a bag pairs the same way everywhere and fails with the same
one-line errors. Pairing is ``pairing.pair_by_stamp``'s: globally nearest first within the
slop, each message used at most once, by header stamp (never by recording time).

Why two passes: pairing a 100 000-frame bag needs its stamps, not its pixels. Pass 1
(``scan``) reads only the 8 stamp bytes after each image message's CDR header. Pass 2
(``read_pairs``) reads the bag once more in recording order and holds a message only until
its partner arrives, so memory is bounded by how far apart partners are recorded, not by the
bag's length. Pass 2 checks that it sees the messages pass 1 saw, so a bag changed in between
is an error instead of wrong pairs.

API
---
``PairedBagReader(path, thermal_topic, rgb_topic, say=...)`` opens the bag (a rosbag2
directory, a single .mcap/.db3 file, or a directory that lost its metadata.yaml but holds one
storage file) and checks that both topics exist and carry Image or CompressedImage. Topic
names may leave out the leading slash. ``say`` takes the warnings (default: stderr). Use it
as a context manager or call ``close()``. Opened without topics, it reads only the bag's topic
list; ``reader.select_topics(thermal_topic, rgb_topic)`` then checks and takes the two (a
caller that reports the bag's topics even when one is missing does so).

* ``reader.path``: the bag actually opened; ``reader.topics``: what the bag's metadata says,
  ``{topic: (msgtype, message count)}``; ``reader.connections``: all of its connections.
* ``reader.thermal``, ``reader.rgb``: the two ``ImageStream`` objects; their ``stamps`` and
  ``recorded`` lists (one entry per message, in recording order) are filled by ``scan()``.
* ``reader.scan()``: pass 1 (stamps only, no pixels); says (``say``) when the metadata's
  message counts disagree with the storage.
* ``reader.pair(slop_s, thermal_offset_s=0.0)``: runs ``scan()`` if needed and pairs the
  stamps; the result is kept as ``reader.pairing`` (its ``pairs`` are (thermal index, RGB
  index) in RGB order). The thermal offset is added to every thermal stamp before pairing (a
  thermal camera late by L s needs -L; ``reader.thermal_stamps(offset)`` gives the stamps so
  corrected); messages keep their own stamps.
* ``reader.read_pairs(selected=None, copies=())``: pass 2. Yields an ``ImagePair`` (``seq``:
  its index in ``reader.pairing.pairs``, ``thermal``, ``rgb``) when the later of its two
  messages is read, for every pair or only for the ``seq`` numbers in ``selected``, and a
  ``CopiedMessage`` for every message on the ``copies`` connections, all in recording order
  (a message that is copied and completes a pair yields the copy first). Pairs therefore come
  in the order their second message was recorded, not in ``seq`` order; ``reader.peak_waiting``
  is the most messages held at once.
* ``reader.images(stream)``: one stream's messages in recording order, as ``ImageMessage`` objects.
* ``ImageMessage.decode(source)``: the deserialized message and its pixels
  (``conversion.image_to_array`` / ``compressed_to_array``); ``source`` names the bag in errors.

Every failure (no such file, unreadable or truncated storage, a missing topic, a wrong message
type, a corrupt header, a bag changed between passes, an undecodable image) is a
``BagReadError``: one line that names the file and, where there is one, the topic and message.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.interfaces import Connection
from rosbags.rosbag2 import Reader

from gifnet_ros.fusion.conversion import compressed_to_array, image_to_array
from gifnet_ros.fusion.errors import one_line
from gifnet_ros.fusion.pairing import PairingResult, pair_by_stamp
from gifnet_ros.offline.bag_io import (
    COMPRESSED_IMAGE,
    IMAGE,
    IMAGE_TYPES,
    ToolError,
    header_stamp_ns,
    typestore,
)

BAG_SUFFIXES = (".mcap", ".db3")
THERMAL, RGB = "thermal", "rgb"


class BagReadError(ToolError):
    """A bag that cannot be read as asked; its message is one line naming the file."""


def stamp_text(stamp_ns: int) -> str:
    """A stamp in nanoseconds as ``SECONDS.NANOSECONDS``, the way ``ros2 bag`` prints it."""
    return f"{stamp_ns // 1_000_000_000}.{stamp_ns % 1_000_000_000:09d}"


def topic_name(name: str) -> str:
    """Bags store fully qualified names; accept ``fused/image`` for ``/fused/image``."""
    return name if name.startswith("/") else "/" + name


@dataclass
class ImageStream:
    """One input image topic: its connections and, after pass 1, its messages' stamps and
    recording times (nanoseconds, one entry per message in recording order)."""

    role: str  # THERMAL or RGB, as errors name it
    topic: str
    connections: list[Connection]
    stamps: list[int] = field(default_factory=list)
    recorded: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class ImageMessage:
    """One serialized input image, with what it takes to decode it and to name it in an
    error; plain data, so that it can travel to another process (a Ray worker)."""

    topic: str
    msgtype: str
    index: int  # among the topic's messages, in recording order
    stamp_ns: int  # header.stamp, as recorded (no thermal offset)
    recorded_ns: int
    raw: bytes

    def decode(self, source: str) -> tuple[Any, np.ndarray]:
        """The message and its pixels; a BagReadError naming the message when either fails."""
        where = f"{source}: {self.topic} message {self.index} (stamp {stamp_text(self.stamp_ns)})"
        try:
            msg = typestore().deserialize_cdr(self.raw, self.msgtype)
        except Exception as exc:  # a truncated buffer fails in struct, numpy or rosbags
            raise BagReadError(f"{where} is corrupt: {one_line(exc)}") from None
        try:
            if self.msgtype == COMPRESSED_IMAGE:
                return msg, compressed_to_array(msg)
            return msg, image_to_array(msg)
        except ValueError as exc:
            raise BagReadError(f"{where}: {one_line(exc)}") from None


@dataclass(frozen=True)
class ImagePair:
    """A pair read in pass 2: ``seq`` is its index in the reader's ``pairing.pairs``."""

    seq: int
    thermal: ImageMessage
    rgb: ImageMessage


@dataclass(frozen=True)
class CopiedMessage:
    """A message of a connection that ``read_pairs`` was asked to copy, as stored."""

    connection: Connection
    recorded_ns: int
    raw: bytes


def bag_path(path: Path, say: Callable[[str], None]) -> Path:
    """The bag to open: a rosbag2 directory, a single .mcap/.db3 file, or a directory that
    lost its metadata.yaml but holds exactly one storage file (said with ``say``)."""
    if not path.exists():
        raise BagReadError(f"{path}: no such file or directory")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        files = [p for p in sorted(path.iterdir()) if p.suffix in BAG_SUFFIXES]
        if len(files) != 1:
            raise BagReadError(
                f"{path}: not a rosbag2 directory (no metadata.yaml and "
                f"{len(files)} .mcap/.db3 files)"
            )
        say(f"{path} has no metadata.yaml; reading {files[0].name}")
        return files[0]
    return path


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


class PairedBagReader:
    """A bag opened for its thermal/RGB pairs; see the module docstring for the API."""

    def __init__(
        self,
        path: Path,
        thermal_topic: str | None = None,
        rgb_topic: str | None = None,
        say: Callable[[str], None] = _stderr,
    ) -> None:
        self.say = say
        self.path = bag_path(Path(path), say)
        self.pairing = PairingResult((), (), (), ())
        self.peak_waiting = 0  # messages held at once by the last read_pairs
        self._scanned = False
        try:
            reader = Reader(self.path)
            reader.open()
        except Exception as exc:  # rosbags, apsw and OS errors alike name the problem
            raise BagReadError(f"{self.path}: cannot open bag: {one_line(exc)}") from None
        self._reader: Reader | None = reader
        try:
            self.topics = {
                name: (info.msgtype, info.msgcount) for name, info in sorted(reader.topics.items())
            }
            self.connections: list[Connection] = list(reader.connections)
            self.thermal = self.rgb = ImageStream("", "", [])
            if thermal_topic is not None or rgb_topic is not None:
                self.select_topics(thermal_topic, rgb_topic)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> PairedBagReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the storage; the streams' stamps and the pairing stay."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def select_topics(self, thermal_topic: str, rgb_topic: str) -> None:
        """Take ``thermal_topic`` and ``rgb_topic`` as the image streams to pair; a
        BagReadError (listing the bag's topics) when one is missing or not an image."""
        self.thermal = self._stream(thermal_topic, THERMAL)
        self.rgb = self._stream(rgb_topic, RGB)
        if self.thermal.topic == self.rgb.topic:
            raise BagReadError(f"thermal and RGB topic are both {self.thermal.topic!r}")
        self._scanned = False

    def _stream(self, name: str, role: str) -> ImageStream:
        topic = topic_name(name)
        connections = [c for c in self.connections if c.topic in (name, topic)]
        if not connections:
            available = (
                ", ".join(
                    f"{c.topic} ({c.msgtype})"
                    for c in sorted(self.connections, key=lambda c: c.topic)
                )
                or "none"
            )
            raise BagReadError(
                f"{self.path}: no {role} topic {name!r}; topics in the bag: {available}"
            )
        for conn in connections:
            if conn.msgtype not in IMAGE_TYPES:
                raise BagReadError(
                    f"{self.path}: {role} topic {conn.topic} has type {conn.msgtype}, "
                    f"expected {IMAGE} or {COMPRESSED_IMAGE}"
                )
        return ImageStream(role, connections[0].topic, connections)

    # -- pass 1 ----------------------------------------------------------------------------

    def scan(self) -> None:
        """Pass 1: stamps and recording times of both streams' messages, no pixels kept."""
        streams = {c.id: s for s in (self.thermal, self.rgb) for c in s.connections}
        for stream in streams.values():
            stream.stamps.clear()
            stream.recorded.clear()
        for conn, recorded, raw in self._messages(self.thermal.connections + self.rgb.connections):
            stream = streams[conn.id]
            stream.stamps.append(self._stamp(stream, len(stream.stamps), recorded, raw))
            stream.recorded.append(recorded)
        self._scanned = True
        for stream in (self.thermal, self.rgb):
            claimed = self.topics.get(stream.topic, (None, None))[1]
            if claimed is not None and claimed != len(stream.stamps):
                # Pairing uses what the storage holds; a metadata file that lies (edited, or
                # written by a recorder that crashed) changes nothing but this warning.
                self.say(
                    f"warning: {self.path}: the bag's metadata says {claimed} messages on "
                    f"{stream.topic}, its storage holds {len(stream.stamps)}; using the storage"
                )

    def thermal_stamps(self, thermal_offset_s: float = 0.0) -> list[int]:
        """Thermal stamps as pairing sees them: with ``thermal_offset_s`` added."""
        offset = round(thermal_offset_s * 1e9)
        return [stamp + offset for stamp in self.thermal.stamps]

    def pair(self, slop_s: float, thermal_offset_s: float = 0.0) -> PairingResult:
        """Pair the streams' stamps within ``slop_s`` seconds (``scan()`` first if it has not
        run); kept as ``self.pairing``. Its ``pairs`` are (thermal index, RGB index)."""
        if not self._scanned:
            self.scan()
        self.pairing = pair_by_stamp(
            thermal_stamps_ns=self.thermal_stamps(thermal_offset_s),
            rgb_stamps_ns=self.rgb.stamps,
            slop_ns=round(slop_s * 1e9),
        )
        return self.pairing

    # -- pass 2 ----------------------------------------------------------------------------

    def images(self, stream: ImageStream) -> Iterator[ImageMessage]:
        """Every message of ``stream`` (``self.thermal`` or ``self.rgb``), in recording order."""
        for item in self._reread((stream,), ()):
            if isinstance(item, ImageMessage):
                yield item

    def read_pairs(
        self, selected: Iterable[int] | None = None, copies: Iterable[Connection] = ()
    ) -> Iterator[ImagePair | CopiedMessage]:
        """Pass 2: the pairs of ``self.pairing`` (all, or the ``seq`` numbers in ``selected``)
        as each completes, and the messages of ``copies``, in recording order.

        A message is held only until its partner is read; ``peak_waiting`` is the most held at
        once.
        """
        pairs = self.pairing.pairs
        wanted = range(len(pairs)) if selected is None else sorted(set(selected))
        seq_of_thermal = {pairs[seq][0]: seq for seq in wanted}
        seq_of_rgb = {pairs[seq][1]: seq for seq in wanted}
        waiting: dict[int, ImageMessage] = {}  # by seq: the message of a pair read first
        self.peak_waiting = 0
        for item in self._reread((self.thermal, self.rgb), copies):
            if not isinstance(item, ImageMessage):
                yield item
                continue
            is_rgb = item.topic == self.rgb.topic
            seq = (seq_of_rgb if is_rgb else seq_of_thermal).get(item.index)
            if seq is None:
                continue
            partner = waiting.pop(seq, None)
            if partner is None:
                waiting[seq] = item
            else:
                yield ImagePair(seq, partner, item) if is_rgb else ImagePair(seq, item, partner)
            self.peak_waiting = max(self.peak_waiting, len(waiting))

    def _reread(
        self, streams: Iterable[ImageStream], copies: Iterable[Connection]
    ) -> Iterator[ImageMessage | CopiedMessage]:
        """The bag once more after pass 1: ``streams``' messages as ImageMessages checked
        against pass 1, and ``copies``' messages as stored (a message on both: copy first)."""
        if not self._scanned:
            self.scan()
        of_stream = {c.id: s for s in streams for c in s.connections}
        copies = list(copies)
        copy_ids = {c.id for c in copies}
        wanted = {c.id: c for s in of_stream.values() for c in s.connections}
        wanted.update({c.id: c for c in copies})
        seen = {id(s): 0 for s in of_stream.values()}
        for conn, recorded, raw in self._messages(list(wanted.values())):
            if conn.id in copy_ids:
                yield CopiedMessage(conn, recorded, raw)
            stream = of_stream.get(conn.id)
            if stream is None:
                continue
            index = seen[id(stream)]
            seen[id(stream)] += 1
            self._check_unchanged(stream, index, recorded, raw)
            yield ImageMessage(
                stream.topic, conn.msgtype, index, stream.stamps[index], recorded, bytes(raw)
            )
        for stream in of_stream.values():
            if seen[id(stream)] != len(stream.stamps):
                raise BagReadError(
                    f"{self.path}: {stream.topic} had {len(stream.stamps)} messages in the first "
                    f"pass and {seen[id(stream)]} in the second; was the bag modified?"
                )

    # -- reading ---------------------------------------------------------------------------

    def _messages(self, connections: list[Connection]) -> Iterator[tuple[Connection, int, bytes]]:
        """Iterate the bag; a storage failure mid-way becomes one line naming the file."""
        assert self._reader is not None, "the reader is closed"
        iterator = iter(self._reader.messages(connections=connections))
        count = 0
        while True:
            try:
                item = next(iterator)
            except StopIteration:
                return
            except Exception as exc:  # truncated or corrupt storage, whichever library notices
                raise BagReadError(
                    f"{self.path}: reading failed after {count} messages: {one_line(exc)}"
                ) from None
            count += 1
            yield item

    def _stamp(self, stream: ImageStream, index: int, recorded: int, raw: bytes) -> int:
        try:
            return header_stamp_ns(raw)
        except ValueError as exc:
            raise BagReadError(
                f"{self.path}: {stream.topic} message {index} recorded at "
                f"{stamp_text(recorded)} is corrupt: {exc}"
            ) from None

    def _check_unchanged(self, stream: ImageStream, index: int, recorded: int, raw: bytes) -> None:
        if (
            index >= len(stream.stamps)
            or stream.recorded[index] != recorded
            or stream.stamps[index] != self._stamp(stream, index, recorded, raw)
        ):
            raise BagReadError(
                f"{self.path}: {stream.topic} message {index} differs between the first and the "
                "second pass; was the bag modified?"
            )
