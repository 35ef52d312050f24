"""``gifnet-make-bag``: a thermal + RGB rosbag2 from two videos or two image folders.

For trying the package without a robot and for tests: the shared M3SVD clips (frame k of the
infrared video shows the scene of frame k of the visible one) become a bag that looks like a
recording of two cameras, with the timing defects real recordings have.

Timing model. Frame k has the nominal time ``start + k / rate``. Its RGB message is stamped at
the nominal time plus jitter, its thermal message at the nominal time plus
``--thermal-offset-ms`` plus an independent jitter; the jitter is uniform in
``[-jitter, +jitter]`` from a generator seeded by ``--seed``, so a bag is reproducible. Each
message is recorded (bag timestamp) ``--latency-ms`` after its own stamp, as a recorder on
the network would receive it.

Pixels. Video frames and 8-bit images become ``mono8`` thermal as they are (a colour frame is
converted to grey) and ``mono16`` thermal scaled by 257, which maps 0..255 onto 0..65535
exactly (16-bit images from a folder are used as they are; for ``mono8`` they are divided by
257, rounded). RGB is written as ``rgb8`` or ``bgr8``. With ``--compressed`` both streams are
``sensor_msgs/CompressedImage`` (image_transport's format strings) and the default topics get
image_transport's ``/compressed`` suffix.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from gifnet_ros.fusion.conversion import ImageConversionError, array_to_compressed
from gifnet_ros.fusion.image_files import ImageFileError, pair_folders, read_image
from gifnet_ros.offline.bag_io import (
    COMPRESSED_IMAGE,
    IMAGE,
    ToolError,
    image_cdr,
    open_writer,
    staged_output,
    typestore,
)

PROG = "gifnet-make-bag"
THERMAL_TOPIC = "/thermal/image"
RGB_TOPIC = "/rgb/image"
THERMAL_FRAME = "thermal_camera"
RGB_FRAME = "rgb_camera"
DEFAULT_FOLDER_RATE = 10.0
DEFAULT_START = 1_700_000_000.0
MONO16_SCALE = 257  # 255 * 257 == 65535


def _video_frames(path: Path) -> Iterator[np.ndarray]:
    """Frames of a video in RGB order, like image_files.read_image gives folder images."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ToolError(f"{path}: cannot open as a video")
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def _folder_pairs(thermal_dir: Path, rgb_dir: Path) -> list[tuple[Path, Path]]:
    """Image files present in both folders under the same name (extension may differ)."""
    matched = pair_folders(thermal_dir, rgb_dir)
    if not matched.pairs:
        raise ToolError(
            f"{thermal_dir} and {rgb_dir} have no image file names in common "
            f"({len(matched.only_first)} and {len(matched.only_second)} images)"
        )
    unmatched = len(matched.only_first) + len(matched.only_second)
    if unmatched:
        print(
            f"{PROG}: {unmatched} image(s) without a partner of the same name skipped",
            file=sys.stderr,
        )
    return matched.pairs


def source_pairs(thermal: Path, rgb: Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Frames in RGB order (or grey), two videos in lockstep or two folders by name.

    Stops at the end of the shorter video.
    """
    for path in (thermal, rgb):
        if not path.exists():
            raise ToolError(f"{path}: no such file or directory")
    if thermal.is_dir() != rgb.is_dir():
        raise ToolError(f"{thermal} and {rgb}: give two videos or two image folders")
    if thermal.is_dir():
        try:
            for thermal_path, rgb_path in _folder_pairs(thermal, rgb):
                yield read_image(thermal_path), read_image(rgb_path)
        except ImageFileError as exc:
            raise ToolError(str(exc)) from None
    else:
        # The shorter video ends the bag: a trailing frame without its partner is no pair.
        yield from zip(_video_frames(thermal), _video_frames(rgb), strict=False)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return np.round(image / MONO16_SCALE).astype(np.uint8)
    raise ToolError(f"images of type {image.dtype} are not supported (8 or 16 bit)")


def thermal_pixels(frame: np.ndarray, encoding: str) -> np.ndarray:
    """A source frame as the ``mono8`` (uint8) or ``mono16`` (uint16) thermal image."""
    if frame.ndim == 3:
        frame = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if encoding == "mono16":
        if frame.dtype == np.uint16:
            return frame
        return _to_uint8(frame).astype(np.uint16) * MONO16_SCALE
    return _to_uint8(frame)


def rgb_pixels(frame: np.ndarray) -> np.ndarray:
    """A source frame as HxWx3 uint8 in RGB order (grey is replicated)."""
    frame = _to_uint8(frame)
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    return frame


def _rate(args: argparse.Namespace) -> float:
    if args.rate is not None:
        if not args.rate > 0:
            raise ToolError(f"--rate must be > 0, got {args.rate}")
        return float(args.rate)
    if args.thermal.is_file():
        fps = cv2.VideoCapture(str(args.rgb)).get(cv2.CAP_PROP_FPS)
        if fps and fps > 0:
            return float(fps)
    return DEFAULT_FOLDER_RATE


def make_bag(args: argparse.Namespace) -> int:
    """Write the bag described by parsed ``args``; returns the number of frames written."""
    if args.compressed == "jpeg" and args.thermal_encoding == "mono16":
        raise ToolError("--compressed jpeg cannot carry mono16 thermal images; use png")
    suffix = "/compressed" if args.compressed else ""
    thermal_topic = args.thermal_topic or THERMAL_TOPIC + suffix
    rgb_topic = args.rgb_topic or RGB_TOPIC + suffix
    if thermal_topic == rgb_topic:
        raise ToolError(f"thermal and RGB topic are both {thermal_topic!r}")
    msgtype = COMPRESSED_IMAGE if args.compressed else IMAGE
    period_ns = 1e9 / _rate(args)
    jitter_ns = round(args.jitter_ms * 1e6)
    offset_ns = round(args.thermal_offset_ms * 1e6)
    latency_ns = round(args.latency_ms * 1e6)
    start_ns = round(args.start * 1e9)
    rng = np.random.default_rng(args.seed)
    store = typestore()
    types = store.types
    frames = source_pairs(args.thermal, args.rgb)

    def message(pixels: np.ndarray, encoding: str, frame_id: str, stamp: int) -> memoryview:
        header = types["std_msgs/msg/Header"](
            stamp=types["builtin_interfaces/msg/Time"](
                sec=stamp // 1_000_000_000, nanosec=stamp % 1_000_000_000
            ),
            frame_id=frame_id,
        )
        try:
            if not args.compressed:
                return image_cdr(header, pixels, encoding)
            fmt, data = array_to_compressed(pixels, args.compressed)
        except ImageConversionError as exc:
            raise ToolError(f"{frame_id}: {exc}") from None
        msg = types[COMPRESSED_IMAGE](header=header, format=fmt, data=np.frombuffer(data, np.uint8))
        return store.serialize_cdr(msg, msgtype)

    count = 0
    with staged_output(args.output, args.overwrite) as path:
        writer = open_writer(path, args.storage)
        with writer:
            thermal_conn = writer.add_connection(thermal_topic, msgtype, typestore=store)
            rgb_conn = writer.add_connection(rgb_topic, msgtype, typestore=store)
            # islice stops before decoding a frame pair past --max-frames (None: no limit).
            for thermal_frame, rgb_frame in itertools.islice(frames, args.max_frames):
                if args.resize:
                    thermal_frame = cv2.resize(
                        thermal_frame, args.resize, interpolation=cv2.INTER_AREA
                    )
                    rgb_frame = cv2.resize(rgb_frame, args.resize, interpolation=cv2.INTER_AREA)
                nominal = start_ns + round(count * period_ns)
                rgb_stamp = nominal + int(rng.integers(-jitter_ns, jitter_ns, endpoint=True))
                thermal_stamp = (
                    nominal + offset_ns + int(rng.integers(-jitter_ns, jitter_ns, endpoint=True))
                )
                writer.write(
                    thermal_conn,
                    thermal_stamp + latency_ns,
                    message(
                        thermal_pixels(thermal_frame, args.thermal_encoding),
                        args.thermal_encoding,
                        THERMAL_FRAME,
                        thermal_stamp,
                    ),
                )
                writer.write(
                    rgb_conn,
                    rgb_stamp + latency_ns,
                    message(rgb_pixels(rgb_frame), args.rgb_encoding, RGB_FRAME, rgb_stamp),
                )
                count += 1
            if count == 0:
                raise ToolError(f"{args.thermal} and {args.rgb} gave no frames")
    return count
