"""Helpers shared by the bag tests (gifnet-make-bag and gifnet-fuse-bag): the shared clip,
its frames as OpenCV decodes them, and reading bags back with rosbags."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

from gifnet_ros.pairing import stamp_to_ns

STORE = get_typestore(Stores.ROS2_HUMBLE)
CLIP = "0111_1716"  # 30 fps
SIZE = (64, 48)


def clip_paths(data_dir: Path) -> tuple[Path, Path]:
    """The shared M3SVD clip: (infrared video, visible video)."""
    return (
        data_dir / "m3svd" / "infrared" / f"{CLIP}.mp4",
        data_dir / "m3svd" / "visible" / f"{CLIP}.mp4",
    )


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
