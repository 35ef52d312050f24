"""Helpers shared by the bag tests (gifnet-make-bag, gifnet-fuse-bag, gifnet-fuse-bags): the
shared clip, its frames as OpenCV decodes them, reading bags back with rosbags, and watching a
tool's progress from another process."""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

from gifnet_ros.fusion.pairing import stamp_to_ns
from gifnet_ros.tools import make_bag

STORE = get_typestore(Stores.ROS2_HUMBLE)
CLIP = "0111_1716"  # 30 fps
SIZE = (64, 48)


def clip_paths(data_dir: Path) -> tuple[Path, Path]:
    """The shared M3SVD clip: (infrared video, visible video)."""
    return (
        data_dir / "m3svd" / "infrared" / f"{CLIP}.mp4",
        data_dir / "m3svd" / "visible" / f"{CLIP}.mp4",
    )


def build(clip: tuple[Path, Path], out: Path, frames: int, *extra: str) -> Path:
    """A bag of the clip's first ``frames`` pairs at SIZE (gifnet-make-bag ``extra`` options
    apply), written to ``out``."""
    assert (
        make_bag.main(
            [
                str(out),
                "--thermal",
                str(clip[0]),
                "--rgb",
                str(clip[1]),
                "--max-frames",
                str(frames),
                "--resize",
                f"{SIZE[0]}x{SIZE[1]}",
                *extra,
            ]
        )
        == 0
    )
    return out


def video_frames(path: Path, count: int, size: tuple[int, int] = SIZE) -> list[np.ndarray]:
    """The first frames as OpenCV decodes them (BGR), resized like gifnet-make-bag --resize."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    for _ in range(count):
        ok, frame = capture.read()
        assert ok
        frames.append(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))
    capture.release()
    return frames


def read_bag(path: Path, topic: str | None = None) -> dict[str, list[tuple[int, object]]]:
    """topic -> [(recording time, message)] in recording order; only ``topic`` when given
    (the other topics are not decoded, so they may hold corrupt messages)."""
    topics: dict[str, list[tuple[int, object]]] = {}
    with Reader(path) as reader:
        conns = [c for c in reader.connections if topic is None or c.topic == topic]
        for conn, recorded, raw in reader.messages(connections=conns):
            topics.setdefault(conn.topic, []).append(
                (recorded, STORE.deserialize_cdr(raw, conn.msgtype))
            )
    return topics


def decoded(path: Path, topic: str) -> list[tuple[int, object]]:
    """[(recording time, message)] of one topic (empty if the bag has none)."""
    return read_bag(path, topic).get(topic, [])


def stamp(msg) -> int:
    """A message's header stamp in nanoseconds."""
    return stamp_to_ns(msg.header.stamp)


def leftovers(output: Path) -> list[Path]:
    """Hidden work directories a tool left beside ``output``."""
    return list(output.parent.glob(f".{output.name}.*"))


def wait_for(process: subprocess.Popen, text: bytes, timeout: float) -> bytes:
    """Read the child's stderr until ``text`` shows up (tqdm writes a line per pair)."""
    seen = b""
    selector = selectors.DefaultSelector()
    selector.register(process.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while text not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {text!r} within {timeout} s: {seen[-500:]!r}"
        if selector.select(remaining):
            chunk = os.read(process.stderr.fileno(), 4096)
            assert chunk, f"the tool ended early: {seen[-500:]!r}"
            seen += chunk
    return seen


def signal_when(process: subprocess.Popen, text: bytes, signum: int, timeout: float) -> bytes:
    """Send ``signum`` to the child once ``text`` shows on its stderr; its whole stderr once it
    has ended. A child that outlives ``timeout`` (or a failed wait) is killed, not left behind."""
    try:
        seen = wait_for(process, text, timeout)
        process.send_signal(signum)
        _, rest = process.communicate(timeout=timeout)
        return seen + rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def m3svd_clip(data_dir: Path, name: str) -> tuple[Path, Path]:
    """One of the shared M3SVD clips by name (0111_1716 at 30 fps, 1230_1202 at 22 fps):
    (infrared video, visible video)."""
    return (
        data_dir / "m3svd" / "infrared" / f"{name}.mp4",
        data_dir / "m3svd" / "visible" / f"{name}.mp4",
    )
