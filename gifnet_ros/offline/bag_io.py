"""What the offline bag tools share: output staging, the writer, stamps, errors.

``gifnet-make-bag`` and ``gifnet-fuse-bag`` write rosbag2 with the ``rosbags`` library, so
they run without a ROS install. The bags they write use metadata version 8: ROS 2 Humble's
rosbag2 reads it (version 9 changed the QoS serialization to a form Humble's parser rejects),
and every later distribution reads it too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import FrameType

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

from gifnet_ros.fusion.conversion import array_to_compressed, array_to_image_fields

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
BAG_VERSION = 8
# Written into every staging folder: which process on which host is writing it.
OWNER_FILE = "owner.json"

_STAMP = {True: struct.Struct("<iI"), False: struct.Struct(">iI")}


class ToolError(Exception):
    """A problem the user can act on; printed as one line without a traceback."""


@cache
def typestore() -> Typestore:
    """The message definitions used to (de)serialize images.

    Humble's store: ``sensor_msgs/Image``, ``CompressedImage`` and ``std_msgs/Header`` are the
    same in every ROS 2 distribution since, so the bags suit Humble and newer alike.
    """
    return get_typestore(Stores.ROS2_HUMBLE)


def image_cdr(header: object, pixels: np.ndarray, encoding: str) -> memoryview:
    """A ``sensor_msgs/Image`` of ``pixels`` (the node's conversion) with ``header``,
    serialized for a bag. ImageConversionError when the pixels do not fit the encoding."""
    fields = array_to_image_fields(pixels, encoding)
    fields["data"] = np.frombuffer(fields["data"], np.uint8)
    store = typestore()
    return store.serialize_cdr(store.types[IMAGE](header=header, **fields), IMAGE)


def compressed_cdr(header: object, pixels: np.ndarray, fmt: str, jpeg_quality: int) -> memoryview:
    """A ``sensor_msgs/CompressedImage`` of ``pixels`` (HxW grey or HxWx3 RGB) as jpeg or png,
    image_transport's way, with ``header``, serialized for a bag."""
    text, data = array_to_compressed(pixels, fmt, jpeg_quality)
    store = typestore()
    message = store.types[COMPRESSED_IMAGE](
        header=header, format=text, data=np.frombuffer(data, np.uint8)
    )
    return store.serialize_cdr(message, COMPRESSED_IMAGE)


def header_stamp_ns(raw: bytes | memoryview) -> int:
    """``header.stamp`` of a serialized message that starts with a ``std_msgs/Header``.

    Image and CompressedImage both do, and in CDR the stamp is the 8 bytes after the 4-byte
    encapsulation header, so reading it costs nothing next to deserializing megabytes of
    pixels. Raises ValueError for data too short or not plain CDR.
    """
    if len(raw) < 12:
        raise ValueError(f"{len(raw)} bytes is too short for a message with a header")
    if raw[0] != 0 or raw[1] not in (0, 1):
        raise ValueError(f"unsupported CDR encapsulation 0x{raw[0]:02x}{raw[1]:02x}")
    sec, nanosec = _STAMP[raw[1] == 1].unpack_from(raw, 4)
    return sec * 1_000_000_000 + nanosec


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse an OUTPUT we must not replace, before any work is done.

    Even with ``overwrite``, only a rosbag2 directory (it has ``metadata.yaml``) or an empty
    directory is replaced: a mistyped ``-o ~`` must not delete a home directory.
    """
    if not output.parent.is_dir():
        raise ToolError(f"{output.parent}: output directory does not exist")
    if not (output.exists() or output.is_symlink()):
        return
    if not overwrite:
        raise ToolError(f"{output} exists; pass --overwrite to replace it")
    if output.is_symlink() or not output.is_dir():
        raise ToolError(f"{output} is not a bag directory; not replacing it")
    if not (output / "metadata.yaml").is_file() and any(output.iterdir()):
        raise ToolError(
            f"{output} is a non-empty directory without metadata.yaml; not replacing it"
        )


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), None where /proc lacks it.

    Recorded beside the PID so that a PID reused by an unrelated process after a crash does
    not make a dead run's folder look alive.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) is in parentheses and may hold spaces.
    return stat[stat.rindex(")") + 2 :].split()[19]


def _owner_alive(owner: dict) -> bool:
    """Whether the process recorded in a staging folder's owner file still runs here."""
    pid = owner["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        pass
    start = owner.get("start")
    return start is None or _process_start(pid) in (None, start)


def remove_dead_partials(output: Path) -> list[str]:
    """Remove the staging folders (``.NAME.*.partial``) beside ``output`` of runs that died.

    ``staged_output`` deletes its folder on any exception, but not when its process is killed
    (SIGKILL, out of memory, power loss); without this, every such run would leave a folder
    as large as the bag behind for good. A folder is removed only when its owner file names
    this host and a process that no longer runs; a live run's folder, one from another host
    (a shared file system) and one without an owner file are kept. Returns one line per
    folder found, saying what was done and why.
    """
    host = socket.gethostname()
    lines = []
    for folder in sorted(output.parent.glob(f".{output.name}.*.partial")):
        try:
            owner = json.loads((folder / OWNER_FILE).read_text())
            pid, owner_host = int(owner["pid"]), str(owner["host"])
        except (OSError, ValueError, KeyError, TypeError):
            lines.append(f"kept {folder}: it has no readable {OWNER_FILE}; remove it by hand")
            continue
        if owner_host != host:
            lines.append(f"kept {folder}: written by pid {pid} on {owner_host}, not this host")
        elif _owner_alive(owner):
            lines.append(f"kept {folder}: pid {pid} is still writing it")
        else:
            shutil.rmtree(folder, ignore_errors=True)
            lines.append(f"removed {folder}, left by pid {pid} that is no longer running")
    return lines


@contextmanager
def staged_output(output: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a path to write the bag to; move it to ``output`` only if the block completes.

    The bag is written into a hidden temporary directory beside ``output`` (same file
    system, so the final move is a rename). If the block raises, Ctrl-C included, the
    temporary directory is deleted and ``output`` is untouched, so a reader never finds a
    half-written bag where the finished one belongs. A replaced bag is deleted only after the
    new one is in place. The directory records this host and process (``OWNER_FILE``), so
    that a later run can tell a killed run's leftover from a live one (``remove_dead_partials``).
    """
    check_output(output, overwrite)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent)
    )
    try:
        pid = os.getpid()
        owner = {"host": socket.gethostname(), "pid": pid, "start": _process_start(pid)}
        (staging / OWNER_FILE).write_text(json.dumps(owner) + "\n")
        bag = staging / output.name
        yield bag
        if output.exists():
            os.rename(output, staging / f"{output.name}.replaced")
        os.rename(bag, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def open_writer(path: Path, storage: str) -> Writer:
    """A rosbags Writer for a new bag at ``path`` in ``storage`` ('mcap' or 'sqlite3')."""
    return Writer(path, version=BAG_VERSION, storage_plugin=STORAGES[storage])


def interrupt_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C, so ``staged_output`` cleans up on ``kill`` too."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
