"""The output bag of a bag's fusion: copied input topics and the fused stream, all or nothing.

The bag is written in a hidden folder beside OUTPUT (``bag_io.staged_output``) and renamed to
OUTPUT by ``commit``; ``abort`` (an error, Ctrl-C) removes it, so a reader never finds half a
bag where the finished one belongs. Copied topics keep their message definitions, hashes and
QoS profiles, so that ``ros2 bag play`` offers them as the recording did; the fused topics
take the RGB topic's QoS.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from rosbags.interfaces import Connection, ConnectionExtRosbag2, MessageDefinitionFormat
from rosbags.rosbag2 import Writer, WriterError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from gifnet_ros.fusion.errors import one_line
from gifnet_ros.offline.bag_io import (
    COMPRESSED_IMAGE,
    IMAGE,
    ToolError,
    open_writer,
    staged_output,
    typestore,
)
from gifnet_ros.offline.bag_reader import topic_name


def copied_connections(
    path: Path, connections: list[Connection], spec: str, fused_topic: str
) -> list[Connection]:
    """The input connections that --copy-topics ``spec`` (all, none or a comma-separated
    list) copies unchanged; a ToolError for a topic not in the bag or one that the fused
    topic would collide with."""
    spec = spec.strip()
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


class BagOutput:
    """One output bag from ``open`` to ``commit`` or ``abort``; every write failure (a full
    disk, a file size limit) is a ToolError naming OUTPUT."""

    def __init__(self, output: Path, overwrite: bool, storage: str) -> None:
        self.output = output
        self.overwrite = overwrite
        self.storage = storage
        self._stack = ExitStack()
        self._writer: Writer | None = None
        self._fused: Connection | None = None
        self._compressed: Connection | None = None

    def open(
        self,
        source: Path,
        settings: dict[str, Any],
        copies: list[Connection],
        like: Connection,
        fused_topic: str,
        compressed: bool,
    ) -> dict[int, Connection]:
        """Start the hidden bag, record where it comes from and how it was made, and add its
        connections: the ``copies`` as the input has them, then ``fused_topic`` (and
        ``fused_topic/compressed``, image_transport's name) with ``like``'s QoS. Returns the
        output connection of each copied input connection, by the input's id."""
        with self.writing():
            staging = self._stack.enter_context(staged_output(self.output, self.overwrite))
            writer = self._writer = self._stack.enter_context(open_writer(staging, self.storage))
            writer.set_custom_data("gifnet_ros.source", str(source))
            writer.set_custom_data("gifnet_ros.settings", json.dumps(settings, sort_keys=True))
            outputs: dict[tuple[str, str, str], Connection] = {}
            copy_to: dict[int, Connection] = {}
            for conn in copies:
                key = (conn.topic, conn.msgtype, repr(conn.ext))
                if key not in outputs:
                    msgdef, digest = _definition(source, conn)
                    outputs[key] = writer.add_connection(
                        conn.topic,
                        conn.msgtype,
                        msgdef=msgdef,
                        rihs01=digest,
                        offered_qos_profiles=_qos(conn),
                    )
                copy_to[conn.id] = outputs[key]
            qos = _qos(like)
            self._fused = writer.add_connection(
                fused_topic, IMAGE, typestore=typestore(), offered_qos_profiles=qos
            )
            if compressed:
                self._compressed = writer.add_connection(
                    fused_topic + "/compressed",
                    COMPRESSED_IMAGE,
                    typestore=typestore(),
                    offered_qos_profiles=qos,
                )
        return copy_to

    def write(self, connection: Connection, recorded: int, raw: bytes) -> None:
        """A copied message, as read."""
        with self.writing():
            self._writer.write(connection, recorded, raw)

    def write_fused(self, recorded: int, message: bytes, compressed: bytes | None) -> None:
        """A fused Image and, with --fused-compressed, its CompressedImage."""
        with self.writing():
            self._writer.write(self._fused, recorded, message)
            if compressed is not None:
                self._writer.write(self._compressed, recorded, compressed)

    def commit(self) -> dict[str, int]:
        """Close the bag and move it to OUTPUT; the messages written per topic."""
        writer = self._writer
        with self.writing():
            self._stack.close()  # closes the writer, then renames the bag to OUTPUT
        return {conn.topic: writer.counts[conn.id] for conn in writer.connections}

    def abort(self) -> None:
        """Remove an open bag without writing anything to OUTPUT."""
        self._stack.__exit__(ToolError, ToolError("aborted"), None)

    @contextmanager
    def writing(self) -> Iterator[None]:
        try:
            yield
        except (OSError, sqlite3.Error, WriterError) as exc:  # a full disk, a size limit
            raise ToolError(f"{self.output}: writing the bag failed: {one_line(exc)}") from None


def _qos(conn: Connection) -> list[Any]:
    ext = conn.ext
    return list(ext.offered_qos_profiles) if isinstance(ext, ConnectionExtRosbag2) else []


def _definition(path: Path, conn: Connection) -> tuple[str, str]:
    """Message definition and RIHS01 hash for a copied topic, as the input has them.

    MCAP files carry the definition but no hash, so the hash is computed from the definition;
    bags without definitions fall back to the standard ROS 2 types.
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
        msgdef = store.generate_msgdef(conn.msgtype, ros_version=2)[0]
        return msgdef, store.hash_rihs01(conn.msgtype)
    raise ToolError(
        f"{path}: topic {conn.topic} has type {conn.msgtype} without a definition in the bag, "
        "so it cannot be copied; leave it out of --copy-topics"
    )
