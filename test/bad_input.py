"""Generated bad (and good) image messages for the robustness tests, with their expected fate.

One strategy feeds three layers: the conversion functions, the live node over DDS and the
offline bag tool, so "bad input" means the same thing everywhere. Each :class:`Case` carries
what it should do, decided here from what was generated (which defect was applied) and the
ROS buffer rule, written out independently of ``gifnet_ros.fusion.conversion``:

* ``ok``: every pixel is present, so the message converts (and a pair containing it fuses);
* ``conversion``: the message cannot be converted (one-line ImageConversionError);
* ``alignment``: converts, but the thermal size differs from the RGB size with
  ``align.method none``.

Counts of the cases that ran are kept in :data:`RAN` and printed at the end of the session.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from hypothesis import strategies as st

THERMAL_ENCODINGS = {"mono8": 1, "8UC1": 1, "mono16": 2, "16UC1": 2, "32FC1": 4}
RGB_ENCODINGS = {"rgb8": 3, "bgr8": 3, "8UC3": 3, "rgba8": 4, "bgra8": 4}
UNKNOWN_ENCODINGS = ("nv12", "yuv420", "", "MONO8", "16UC3", "32FC3", "mono8 ", "jpeg")
DTYPES = {1: np.uint8, 2: np.uint16, 4: np.float32}

DEFECTS = (
    "none",
    "step_small",
    "step_large_packed_data",
    "truncated",
    "oversized",
    "wrong_endian",
    "nan_inf",
    "zero_size",
    "unknown_encoding",
    "garbage_compressed",
    "mismatched_size",
)
"""Every defect the generator applies ('none' is a valid message with random padding)."""
STAMPS = ("now", "zero", "equal_previous", "backwards")

RAN: Counter[str] = Counter()
"""Generated cases that ran, per layer and per expected outcome (printed by the tests)."""


@dataclass
class Case:
    """One generated message for ``role`` and what it should do (see the module docstring)."""

    role: str
    defect: str
    expected: str
    encoding: str = ""
    width: int = 0
    height: int = 0
    step: int = 0
    is_bigendian: int = 0
    data: bytes = field(default=b"", repr=False)
    compressed_format: str | None = None  # set: a CompressedImage with this format
    stamp: str = "now"
    pixels: np.ndarray | None = field(default=None, repr=False)  # what a valid message holds

    def describe(self) -> str:
        kind = (
            f"CompressedImage {self.compressed_format}"
            if self.compressed_format
            else (
                f"{self.encoding!r} {self.width}x{self.height} step {self.step} "
                f"{len(self.data)} B be={self.is_bigendian}"
            )
        )
        return f"{self.role} {self.defect} ({kind}) stamp {self.stamp} -> {self.expected}"

    def fields(self) -> dict[str, Any]:
        """Message fields (without header) for sensor_msgs/Image or CompressedImage."""
        if self.compressed_format is not None:
            return {"format": self.compressed_format, "data": self.data}
        return {
            "height": self.height,
            "width": self.width,
            "encoding": self.encoding,
            "is_bigendian": self.is_bigendian,
            "step": self.step,
            "data": self.data,
        }


def _stored(pixels: np.ndarray, big_endian: bool, step: int) -> tuple[bytes, int]:
    """Rows of ``pixels`` in the byte order given, padded to ``step``; returns (data, row bytes)."""
    height = pixels.shape[0]
    order = ">" if big_endian else "<"
    rows = pixels.astype(pixels.dtype.newbyteorder(order)).reshape(height, -1).view(np.uint8)
    padded = np.zeros((height, step), np.uint8)
    padded[:, : rows.shape[1]] = rows
    return padded.tobytes(), rows.shape[1]


@st.composite
def cases(
    draw: st.DrawFn,
    *,
    roles: tuple[str, ...] = ("thermal", "rgb"),
    size: tuple[int, int] | None = None,
    defects: tuple[str, ...] = DEFECTS,
    stamps: tuple[str, ...] = ("now",),
) -> Case:
    """A message with one defect (or none). ``size`` fixes width x height of the messages
    that should convert (None: random 1..24); ``mismatched_size`` always differs from it."""
    role = draw(st.sampled_from(roles))
    defect = draw(st.sampled_from(defects))
    if defect == "mismatched_size" and role != "thermal":
        defect = "none"
    stamp = draw(st.sampled_from(stamps))
    if defect == "garbage_compressed":
        fmt = draw(st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8"]))
        # A fixed leading byte that starts no image format OpenCV reads, then random bytes,
        # or a JPEG start-of-image marker followed by garbage.
        prefix = draw(st.sampled_from([b"\x00garbage", b"\xff\xd8\xff\xe0"]))
        data = prefix + draw(st.binary(max_size=200))
        return Case(role, defect, "conversion", compressed_format=fmt, data=data, stamp=stamp)

    encodings = THERMAL_ENCODINGS if role == "thermal" else RGB_ENCODINGS
    if defect == "nan_inf":
        encoding = "32FC1" if role == "thermal" else draw(st.sampled_from(sorted(encodings)))
    else:
        encoding = draw(st.sampled_from(sorted(encodings)))
    item = encodings[encoding] if encoding in THERMAL_ENCODINGS else 1
    channels = 1 if role == "thermal" else encodings[encoding]
    if size is None:
        width, height = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    else:
        width, height = size
    if defect == "mismatched_size":
        width = draw(st.integers(1, 48).filter(lambda w, w0=width: w != w0))
    dtype = DTYPES[item]
    shape = (height, width) if channels == 1 else (height, width, channels)
    if dtype is np.float32:
        pixels = draw(st.floats(200.0, 400.0, width=32)) + np.arange(
            height * width, dtype=np.float32
        ).reshape(shape) * np.float32(0.01)
        pixels = pixels.astype(np.float32)
        if defect == "nan_inf":
            mask = draw(st.integers(0, 2**32 - 1))
            rng = np.random.default_rng(mask)
            chosen = rng.random(shape) < draw(st.sampled_from([0.1, 0.5, 1.0]))
            pixels[chosen] = rng.choice(
                np.array([np.nan, np.inf, -np.inf], np.float32), chosen.sum()
            )
    else:
        seed = draw(st.integers(0, 2**32 - 1))
        pixels = np.random.default_rng(seed).integers(
            0, np.iinfo(dtype).max, size=shape, dtype=dtype, endpoint=True
        )
    big_endian = draw(st.booleans())
    pad = draw(st.integers(0, 9))
    data, row = _stored(pixels, big_endian, row_bytes := width * channels * item + pad)
    step = row_bytes
    expected = "alignment" if defect == "mismatched_size" else "ok"
    if defect == "step_small":
        step = row - draw(st.integers(1, row))
        expected = "conversion"
    elif defect == "step_large_packed_data":
        data, _ = _stored(pixels, big_endian, row)
        step = row + draw(st.integers(1, 16))
        # Every row but the last needs its padding: only a single-row image is complete.
        expected = "ok" if height == 1 else "conversion"
    elif defect == "truncated":
        minimum = step * (height - 1) + row
        data = data[: minimum - draw(st.integers(1, minimum))]
        expected = "conversion"
    elif defect == "oversized":
        data = data + bytes(draw(st.integers(1, 64)))
        expected = "conversion"
    elif defect == "wrong_endian":
        big_endian = not big_endian  # still every byte present: converts, to other values
    elif defect == "zero_size":
        width, height = draw(st.sampled_from([(0, 0), (0, height), (width, 0)]))
        data = data[: draw(st.integers(0, len(data)))]
        expected = "conversion"
    elif defect == "unknown_encoding":
        encoding = draw(st.sampled_from(UNKNOWN_ENCODINGS))
        expected = "conversion"
    elif defect == "none" and draw(st.booleans()) and pad:
        data = data[:-pad]  # the last row without its padding: every pixel is still there
    return Case(
        role,
        defect,
        expected,
        encoding=encoding,
        width=width,
        height=height,
        step=step,
        is_bigendian=int(big_endian),
        data=data,
        stamp=stamp,
        pixels=pixels if expected != "conversion" and defect != "wrong_endian" else None,
    )


def print_counts(request: Any, layer: str) -> None:
    """Write the cases of ``layer`` that ran to the terminal (shown without -s as well)."""
    counts = {k: v for k, v in sorted(RAN.items()) if k.startswith(layer)}
    line = f"generated cases run through the {layer}: {sum(counts.values())} {counts}"
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n" + line)


def good_compressed(pixels: np.ndarray) -> bytes:
    """A PNG of RGB (or grey) ``pixels`` as image_transport would send it (BGR in the file)."""
    image = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()
