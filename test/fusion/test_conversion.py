"""Tests for gifnet_ros.fusion.conversion against real rclpy and rosbags messages.

Expected arrays are built independently of the code under test: raw messages are written byte
by byte with ``struct`` from a pixel formula, and PNG files are written by hand with ``zlib``
(no OpenCV encoder involved), so a wrong channel order, byte order, step or padding handling
shows up as a mismatch.
"""

from __future__ import annotations

import math
import struct
import zlib
from array import array as py_array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import psnr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pixel_reference import (
    bayer_mosaic,
    bilinear_interior,
    bt601_studio_rgb,
    sixteen_to_eight,
    yuv422_samples,
)
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CompressedImage, Image

from gifnet_ros.fusion.conversion import (
    SUPPORTED_ENCODINGS,
    WRITABLE_ENCODINGS,
    ImageConversionError,
    array_to_compressed,
    array_to_image_fields,
    compressed_to_array,
    image_to_array,
)
from gifnet_ros.fusion.thermal import normalize_thermal

TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
BagImage = TYPESTORE.types["sensor_msgs/msg/Image"]
BagCompressedImage = TYPESTORE.types["sensor_msgs/msg/CompressedImage"]
BagHeader = TYPESTORE.types["std_msgs/msg/Header"]
BagTime = TYPESTORE.types["builtin_interfaces/msg/Time"]

# The test's own description of each encoding, written from REP 104 / sensor_msgs
# image_encodings, not from conversion.py: struct code of one channel, numpy dtype of the
# result, and the channel order in memory ("" for grey).
SPEC: dict[str, tuple[str, type, str]] = {
    "mono8": ("B", np.uint8, ""),
    "8UC1": ("B", np.uint8, ""),
    "mono16": ("H", np.uint16, ""),
    "16UC1": ("H", np.uint16, ""),
    "32FC1": ("f", np.float32, ""),
    "rgb8": ("B", np.uint8, "RGB"),
    "bgr8": ("B", np.uint8, "BGR"),
    "8UC3": ("B", np.uint8, "BGR"),
    "rgba8": ("B", np.uint8, "RGBA"),
    "bgra8": ("B", np.uint8, "BGRA"),
}
PAD_BYTE = 0xA5
ALPHA = 77
FLOATS = [-273.15, 0.0, 1.5e-3, 310.25, math.nan, math.inf, -math.inf, 65535.5, -0.0, 1e30]


# Camera encodings that are read only, from sensor_msgs/image_encodings.hpp (Kilted): the
# memory order of each 16-bit colour encoding, the byte order of each 4:2:2 pixel pair
# (``uyvy``/``yuyv`` are the new names of ``yuv422``/``yuv422_yuy2``), and each Bayer
# mosaic's top-left 2x2 colours, row 0 then row 1, which is what the ROS name spells.
COLOUR16 = {"rgb16": "RGB", "bgr16": "BGR", "rgba16": "RGBA", "bgra16": "BGRA"}
YUV422 = {"uyvy": "UYVY", "yuv422": "UYVY", "yuyv": "YUYV", "yuv422_yuy2": "YUYV"}
BAYER = {
    f"bayer_{pattern}{bits}": (pattern.upper(), bits)
    for pattern in ("rggb", "bggr", "gbrg", "grbg")
    for bits in (8, 16)
}


def test_spec_covers_the_supported_encodings() -> None:
    assert set(SUPPORTED_ENCODINGS) == set(SPEC) | set(COLOUR16) | set(YUV422) | set(BAYER)
    assert set(WRITABLE_ENCODINGS) == set(SPEC)


def channel_value(encoding: str, row: int, col: int, channel: int) -> float | int:
    """The test pattern: distinct per pixel and channel, with both bytes of 16-bit values used."""
    code = SPEC[encoding][0]
    if code == "B":
        return (row * 37 + col * 11 + channel * 101 + 5) % 256
    if code == "H":
        return (row * 9001 + col * 257 + 3) % 65536
    return FLOATS[(row * 3 + col) % len(FLOATS)]


def handmade_image(
    encoding: str, height: int, width: int, pad: int, bigendian: bool
) -> tuple[bytes, int, np.ndarray]:
    """(data, step, expected array) written pixel by pixel with struct."""
    code, dtype, order = SPEC[encoding]
    endian = ">" if bigendian else "<"
    rows = []
    expected = []
    for r in range(height):
        row = bytearray()
        expected_row = []
        for c in range(width):
            if not order:
                value = channel_value(encoding, r, c, 0)
                row += struct.pack(endian + code, value)
                expected_row.append(value)
                continue
            rgb = [channel_value(encoding, r, c, k) for k in range(3)]
            by_letter = {"R": rgb[0], "G": rgb[1], "B": rgb[2], "A": ALPHA}
            for letter in order:
                row += struct.pack(endian + code, by_letter[letter])
            expected_row.append(rgb)
        rows.append(bytes(row) + bytes([PAD_BYTE]) * pad)
        expected.append(expected_row)
    step = len(rows[0])
    return b"".join(rows), step, np.array(expected, dtype=dtype)


def rclpy_image(encoding: str, height: int, width: int, step: int, data: Any, big: bool) -> Image:
    return Image(
        height=height, width=width, encoding=encoding, is_bigendian=int(big), step=step, data=data
    )


def bag_header() -> Any:
    return BagHeader(stamp=BagTime(sec=12, nanosec=345), frame_id="thermal")


def bag_image(encoding: str, height: int, width: int, step: int, data: bytes, big: bool) -> Any:
    return BagImage(
        header=bag_header(),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(big),
        step=step,
        data=np.frombuffer(data, dtype=np.uint8).copy(),
    )


def via_rclpy_wire(*args: Any) -> Image:
    """An rclpy message that went through CDR serialisation, as a subscriber receives it."""
    return deserialize_message(serialize_message(rclpy_image(*args)), Image)


def via_rosbags_wire(*args: Any) -> Any:
    """A rosbags message read back from CDR, as the bag tool receives it."""
    raw = TYPESTORE.serialize_cdr(bag_image(*args), "sensor_msgs/msg/Image")
    return TYPESTORE.deserialize_cdr(raw, "sensor_msgs/msg/Image")


MAKERS = {
    "rclpy": rclpy_image,
    "rclpy_cdr": via_rclpy_wire,
    "rosbags": bag_image,
    "rosbags_cdr": via_rosbags_wire,
}


@dataclass
class PlainImage:
    """A user-built object with the Image fields, for data types rclpy would convert away."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: Any


# --------------------------------------------------------------------------- raw images


def in_every_layout(test: Callable[..., None]) -> Callable[..., None]:
    """Run ``test(maker, bigendian, pad)`` with each message maker, both byte orders, and
    dense and padded rows (an odd pad leaves 16-bit and float rows unaligned)."""
    for mark in (
        pytest.mark.parametrize("maker", sorted(MAKERS)),
        pytest.mark.parametrize("bigendian", [False, True], ids=["le", "be"]),
        pytest.mark.parametrize("pad", [0, 3], ids=["dense", "padded"]),
    ):
        test = mark(test)
    return test


@in_every_layout
@pytest.mark.parametrize("encoding", sorted(SPEC))
def test_every_encoding_decodes_handmade_bytes(
    encoding: str, pad: int, bigendian: bool, maker: str
) -> None:
    # An odd pad leaves 16-bit and float rows unaligned, which must not matter.
    data, step, expected = handmade_image(encoding, 5, 7, pad, bigendian)
    msg = MAKERS[maker](encoding, 5, 7, step, data, bigendian)
    out = image_to_array(msg)
    assert out.dtype == expected.dtype and out.dtype.isnative
    assert out.shape == expected.shape
    assert out.flags.c_contiguous and out.flags.writeable
    np.testing.assert_array_equal(out, expected)


def test_float_specials_and_sign_are_kept() -> None:
    data, step, expected = handmade_image("32FC1", 2, 5, 1, True)
    out = image_to_array(rclpy_image("32FC1", 2, 5, step, data, True))
    assert np.isnan(out).sum() == np.isnan(expected).sum() > 0
    assert np.isposinf(out).sum() == np.isposinf(expected).sum() > 0
    assert np.isneginf(out).sum() == np.isneginf(expected).sum() > 0
    assert np.array_equal(np.signbit(out), np.signbit(expected))
    assert out[0, 0] == np.float32(-273.15)


@pytest.mark.parametrize(
    "wrap",
    [
        bytes,
        bytearray,
        memoryview,
        lambda d: py_array("B", d),
        list,
        lambda d: np.frombuffer(d, np.uint8),
        lambda d: np.frombuffer(d, np.int8),
    ],
    ids=["bytes", "bytearray", "memoryview", "array", "list", "numpy_uint8", "numpy_int8"],
)
def test_data_container_types(wrap: Any) -> None:
    data, step, expected = handmade_image("bgra8", 4, 3, 2, False)
    out = image_to_array(PlainImage(4, 3, "bgra8", 0, step, wrap(data)))
    np.testing.assert_array_equal(out, expected)


def test_last_row_without_padding_is_accepted() -> None:
    data, step, expected = handmade_image("mono16", 3, 4, 6, False)
    short = data[:-6]
    assert len(short) == step * 2 + 4 * 2
    np.testing.assert_array_equal(
        image_to_array(rclpy_image("mono16", 3, 4, step, short, False)), expected
    )


@pytest.mark.parametrize("maker", ["rclpy", "rosbags"])
def test_result_does_not_alias_the_message_buffer(maker: str) -> None:
    data, step, expected = handmade_image("mono8", 3, 4, 0, False)
    msg = MAKERS[maker]("mono8", 3, 4, step, data, False)
    out = image_to_array(msg)
    for i in range(len(msg.data)):  # the middleware reusing the buffer in place
        msg.data[i] = 0
    np.testing.assert_array_equal(out, expected)
    out[:] = 1  # and writing to the result does not reach the message
    assert not any(msg.data)


def test_bytearray_dense_rgb_is_copied() -> None:
    # The one case where no crop, reorder or swap is needed: still a copy.
    data, step, expected = handmade_image("rgb8", 2, 2, 0, False)
    buffer = bytearray(data)
    out = image_to_array(PlainImage(2, 2, "rgb8", 0, step, buffer))
    buffer[:] = bytes(len(buffer))
    np.testing.assert_array_equal(out, expected)


def test_array_to_image_fields_bytes_are_as_ros_defines_them() -> None:
    fields = array_to_image_fields(np.array([[1, 0x0203]], dtype=np.uint16), "mono16")
    assert fields == {
        "height": 1,
        "width": 2,
        "encoding": "mono16",
        "is_bigendian": 0,
        "step": 4,
        "data": b"\x01\x00\x03\x02",
    }
    pixel = np.array([[[10, 20, 30]]], dtype=np.uint8)
    assert array_to_image_fields(pixel, "rgb8")["data"] == bytes([10, 20, 30])
    assert array_to_image_fields(pixel, "bgr8")["data"] == bytes([30, 20, 10])
    assert array_to_image_fields(pixel, "8UC3")["data"] == bytes([30, 20, 10])
    assert array_to_image_fields(pixel, "rgba8")["data"] == bytes([10, 20, 30, 255])
    assert array_to_image_fields(pixel, "bgra8")["data"] == bytes([30, 20, 10, 255])
    assert array_to_image_fields(pixel, "bgra8")["step"] == 4
    floats = array_to_image_fields(np.array([[1.0, -2.5]], dtype=np.float32), "32FC1")
    assert floats["data"] == struct.pack("<ff", 1.0, -2.5) and floats["step"] == 8
    # A big-endian input array is still written little-endian, as is_bigendian=0 says.
    swapped = array_to_image_fields(np.array([[0x0102]], dtype=">u2"), "16UC1")
    assert swapped["data"] == b"\x02\x01"


@st.composite
def image_cases(draw: st.DrawFn) -> tuple[str, np.ndarray, int, bool, bool]:
    encoding = draw(st.sampled_from(sorted(SPEC)))
    _, dtype, order = SPEC[encoding]
    height, width = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    shape = (height, width, 3) if order else (height, width)
    elements = st.floats(width=32) if dtype is np.float32 else None
    array = draw(hnp.arrays(dtype, shape, elements=elements))
    return encoding, array, draw(st.integers(0, 9)), draw(st.booleans()), draw(st.booleans())


@settings(max_examples=200, deadline=None)
@given(image_cases())
def test_round_trip_through_real_messages(case: tuple[str, np.ndarray, int, bool, bool]) -> None:
    encoding, array, pad, bigendian, trim_last = case
    fields = array_to_image_fields(array, encoding)
    height, width = array.shape[:2]
    item = np.dtype(SPEC[encoding][1]).itemsize
    channels = max(1, len(SPEC[encoding][2]))
    assert (fields["height"], fields["width"]) == (height, width)
    assert fields["step"] == width * channels * item
    assert len(fields["data"]) == fields["step"] * height

    # Re-lay the data out the way another publisher might: big-endian, padded rows.
    data = fields["data"]
    if bigendian:
        data = np.frombuffer(data, np.uint8).reshape(-1, item)[:, ::-1].tobytes()
    step = fields["step"] + pad
    rows = [data[r * fields["step"] : (r + 1) * fields["step"]] for r in range(height)]
    data = b"".join(row + bytes([PAD_BYTE]) * pad for row in rows)
    if trim_last and pad:
        data = data[:-pad]
    relaid = dict(fields, data=data, step=step, is_bigendian=int(bigendian))

    ros = Image(**relaid)
    bag = BagImage(header=bag_header(), **dict(relaid, data=np.frombuffer(data, np.uint8)))
    for msg in (ros, bag):
        out = image_to_array(msg)
        assert out.dtype == array.dtype.newbyteorder("=")
        np.testing.assert_array_equal(out, array)


# --------------------------------------------------------------------------- errors


def raw(
    encoding: str, height: int = 30, width: int = 40, step: int | None = None, data: Any = b""
) -> PlainImage:
    """An image message with an unpadded step unless one is given."""
    if step is None:
        code, _, order = SPEC[encoding]
        step = width * struct.calcsize(code) * max(1, len(order))
    return PlainImage(height, width, encoding, 0, step, data)


def assert_one_line_error(call: Any, *fragments: str) -> None:
    with pytest.raises(ImageConversionError) as info:
        call()
    text = str(info.value)
    assert "\n" not in text and text.strip() == text and text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    assert isinstance(info.value, ValueError)


IMAGE_ERRORS = {
    "unknown_encoding": (
        PlainImage(30, 40, "nv12", 0, 40, bytes(1800)),
        ["unsupported encoding 'nv12'", "supported: mono8", "32FC1", "yuv422", "bayer_grbg16"],
    ),
    "yuv_odd_width": (
        PlainImage(3, 7, "yuyv", 0, 14, bytes(42)),
        ["width 7 of 'yuyv' is odd", "pairs"],
    ),
    "rgb16_step_too_small": (
        PlainImage(30, 40, "rgb16", 0, 200, bytes(6000)),
        ["step 200 is smaller than width*bytes_per_pixel = 240", "'rgb16' 40x30"],
    ),
    "bayer16_data_too_short": (
        PlainImage(4, 4, "bayer_rggb16", 1, 8, bytes(31)),
        ["data has 31 bytes", "step*height = 32", "'bayer_rggb16' 4x4"],
    ),
    "encoding_none": (PlainImage(1, 1, None, 0, 1, b"x"), ["unsupported encoding None"]),
    "zero_height": (raw("mono8", height=0), ["40x0", "'mono8'", "empty"]),
    "zero_width": (raw("mono16", width=0), ["0x30", "'mono16'", "empty"]),
    "step_too_small": (
        raw("rgb8", step=100, data=bytes(3000)),
        ["step 100 is smaller than width*bytes_per_pixel = 120", "'rgb8' 40x30"],
    ),
    "negative_step": (raw("mono8", step=-40, data=bytes(1200)), ["step -40", "= 40"]),
    "data_too_short": (
        raw("rgb8", data=bytes(1000)),
        ["data has 1000 bytes", "step*height = 3600", "'rgb8' 40x30"],
    ),
    "data_one_byte_short": (
        raw("32FC1", height=2, width=2, data=bytes(15)),
        ["data has 15 bytes", "step*height = 16"],
    ),
    "data_too_long": (
        raw("mono8", height=2, width=2, data=bytes(12)),
        ["data has 12 bytes", "more than step*height = 4", "'mono8' 2x2"],
    ),
    "data_float_numpy": (raw("mono8", 1, 2, data=np.zeros(2, np.float32)), ["float32", "uint8"]),
    "data_list_out_of_range": (raw("mono8", 1, 2, data=[1, 300]), ["0..255"]),
    "data_string": (raw("mono8", 1, 2, data="ab"), ["str"]),
    "data_wide_array": (raw("mono8", 1, 2, data=py_array("H", [1])), ["2-byte items", "'H'"]),
    "not_an_image": (
        CompressedImage(format="jpeg", data=b"\xff\xd8"),
        ["sensor_msgs/Image", "CompressedImage", "height"],
    ),
}


@pytest.mark.parametrize("name", sorted(IMAGE_ERRORS))
def test_image_errors(name: str) -> None:
    msg, fragments = IMAGE_ERRORS[name]
    assert_one_line_error(lambda: image_to_array(msg), *fragments)


def test_real_message_errors() -> None:
    msg = Image(height=30, width=40, encoding="rgb8", step=100, data=bytes(3000))
    assert_one_line_error(lambda: image_to_array(msg), "step 100", "120", "'rgb8' 40x30")
    bag = bag_image("bgr8", 30, 40, 120, bytes(1000), False)
    assert_one_line_error(lambda: image_to_array(bag), "data has 1000 bytes", "= 3600")


FIELD_ERRORS = {
    "float64_for_32FC1": (np.zeros((2, 2)), "32FC1", ["'32FC1'", "float32", "float64", "(2, 2)"]),
    "colour_for_mono8": (np.zeros((2, 2, 3), np.uint8), "mono8", ["'mono8'", "HxW", "(2, 2, 3)"]),
    "grey_for_rgb8": (np.zeros((2, 2), np.uint8), "rgb8", ["'rgb8'", "HxWx3", "(2, 2)"]),
    "rgba_array_for_rgba8": (np.zeros((2, 2, 4), np.uint8), "rgba8", ["'rgba8'", "(2, 2, 4)"]),
    "uint16_for_mono8": (np.zeros((2, 2), np.uint16), "mono8", ["'mono8'", "uint16"]),
    "int16_for_mono16": (np.zeros((2, 2), np.int16), "mono16", ["'mono16'", "int16"]),
    "uint8_for_mono16": (np.zeros((2, 2), np.uint8), "16UC1", ["'16UC1'", "uint8"]),
    "empty": (np.zeros((0, 3), np.uint8), "mono8", ["3x0", "empty"]),
    "unknown_encoding": (np.zeros((2, 2), np.uint8), "nv12", ["unsupported encoding 'nv12'"]),
    "read_only_encoding": (
        np.zeros((2, 2, 3), np.uint8),
        "yuv422",
        ["encoding 'yuv422' is read, not written", "written: mono8", "bgra8"],
    ),
}


@pytest.mark.parametrize("name", sorted(FIELD_ERRORS))
def test_array_to_image_fields_errors(name: str) -> None:
    array, encoding, fragments = FIELD_ERRORS[name]
    assert_one_line_error(lambda: array_to_image_fields(array, encoding), *fragments)


# --------------------------------------------------------------------------- camera encodings


def packed(samples: np.ndarray, itemsize: int, bigendian: bool, pad: int) -> tuple[bytes, int]:
    """(data, step): ``samples`` (H x values per row) stored as ``itemsize``-byte words in the
    given byte order, each row followed by ``pad`` bytes."""
    words = np.asarray(samples).astype(np.dtype(f"{'>' if bigendian else '<'}u{itemsize}"))
    rows = words.reshape(words.shape[0], -1).view(np.uint8)
    padded = np.full((rows.shape[0], rows.shape[1] + pad), PAD_BYTE, np.uint8)
    padded[:, : rows.shape[1]] = rows
    return padded.tobytes(), padded.shape[1]


@in_every_layout
@pytest.mark.parametrize("encoding", sorted(COLOUR16))
def test_16bit_colour_is_reordered_and_scaled_to_8bit(
    encoding: str, pad: int, bigendian: bool, maker: str
) -> None:
    rgb = pattern((5, 7, 3), np.uint16)
    rgb[0, :3] = [[0, 128, 129], [32896, 65535, 65407], [257, 385, 386]]  # rounding edges
    by_letter = {"R": rgb[..., 0], "G": rgb[..., 1], "B": rgb[..., 2]}
    by_letter["A"] = np.full(rgb.shape[:2], 4321, np.uint16)
    stored = np.stack([by_letter[letter] for letter in COLOUR16[encoding]], axis=-1)
    data, step = packed(stored.reshape(5, -1), 2, bigendian, pad)
    out = image_to_array(MAKERS[maker](encoding, 5, 7, step, data, bigendian))
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, sixteen_to_eight(rgb))
    np.testing.assert_array_equal(out[0, :3], [[0, 0, 1], [128, 255, 255], [1, 1, 2]])


def test_16bit_colour_scale_is_the_thermal_none_rule() -> None:
    # Every 16-bit value, in all three channels: colour and grey 16-bit share one mapping.
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    data, step = packed(np.repeat(values, 3, axis=1), 2, False, 0)
    out = image_to_array(PlainImage(256, 256, "bgr16", 0, step, data))
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], sixteen_to_eight(values))
        np.testing.assert_array_equal(out[..., channel], normalize_thermal(values, "none"))


@pytest.mark.parametrize("maker", sorted(MAKERS))
@pytest.mark.parametrize("pad", [0, 3], ids=["dense", "padded"])
@pytest.mark.parametrize("encoding", sorted(YUV422))
def test_yuv422_matches_the_bt601_formula(encoding: str, pad: int, maker: str) -> None:
    rng = np.random.default_rng(sorted(YUV422).index(encoding))
    y = rng.integers(0, 256, (6, 10), dtype=np.uint8)
    u, v = rng.integers(0, 256, (2, 6, 5), dtype=np.uint8)
    data, step = packed(yuv422_samples(y, u, v, YUV422[encoding]), 1, False, pad)
    out = image_to_array(MAKERS[maker](encoding, 6, 10, step, data, False))
    assert out.dtype == np.uint8 and out.shape == (6, 10, 3) and out.flags.c_contiguous
    # One pair shares its chroma: the expected image repeats U and V over both pixels.
    expected = bt601_studio_rgb(y, np.repeat(u, 2, axis=1), np.repeat(v, 2, axis=1))
    # OpenCV's fixed-point coefficients round a few values the other way.
    assert np.abs(out.astype(float) - expected).max() <= 1


@pytest.mark.parametrize("order", ["UYVY", "YUYV"])
def test_yuv422_primaries(order: str) -> None:
    # BT.601 studio-swing codes of white, black and the primaries.
    colours = {
        (235, 128, 128): (255, 255, 255),
        (16, 128, 128): (0, 0, 0),
        (81, 90, 240): (255, 0, 0),
        (145, 54, 34): (0, 255, 0),
        (41, 240, 110): (0, 0, 255),
    }
    codes = np.array(list(colours), np.uint8)
    y = np.repeat(codes[:, :1], 2, axis=1)
    samples = yuv422_samples(y, codes[:, 1:2], codes[:, 2:3], order)
    encoding = order.lower()
    out = image_to_array(PlainImage(len(codes), 2, encoding, 0, 4, samples.tobytes()))
    for row, rgb in enumerate(colours.values()):
        assert np.abs(out[row].astype(int) - rgb).max() <= 2, (row, out[row])


@in_every_layout
@pytest.mark.parametrize("encoding", sorted(BAYER))
def test_bayer_demosaic_is_bilinear_with_the_ros_pattern(
    encoding: str, pad: int, bigendian: bool, maker: str
) -> None:
    # An odd pad leaves 16-bit rows unaligned; big-endian 16-bit needs a swap first.
    pattern_name, bits = BAYER[encoding]
    dtype = np.uint8 if bits == 8 else np.uint16
    rgb = np.random.default_rng(bits).integers(0, np.iinfo(dtype).max, (8, 10, 3), endpoint=True)
    mosaic = bayer_mosaic(rgb.astype(dtype), pattern_name)
    data, step = packed(mosaic, bits // 8, bigendian, pad)
    out = image_to_array(MAKERS[maker](encoding, 8, 10, step, data, bigendian))
    assert out.dtype == np.uint8 and out.shape == (8, 10, 3) and out.flags.c_contiguous
    expected = bilinear_interior(mosaic, pattern_name)
    if bits == 16:  # demosaiced at full depth, then scaled
        expected = sixteen_to_eight(expected)
    np.testing.assert_array_equal(out[1:-1, 1:-1], expected)


@pytest.mark.parametrize("encoding", sorted(BAYER))
def test_bayer_of_a_flat_colour_is_that_colour_to_the_border(encoding: str) -> None:
    pattern_name, bits = BAYER[encoding]
    colour = (200, 90, 20) if bits == 8 else (51400, 23130, 5140)  # 257 x the 8-bit colour
    dtype = np.uint8 if bits == 8 else np.uint16
    flat = np.broadcast_to(np.array(colour, dtype), (6, 8, 3))
    data, step = packed(bayer_mosaic(flat, pattern_name), bits // 8, False, 0)
    out = image_to_array(PlainImage(6, 8, encoding, 0, step, data))
    np.testing.assert_array_equal(out, np.broadcast_to(np.array([200, 90, 20]), (6, 8, 3)))


@dataclass
class CameraCase:
    """A read-only camera encoding's samples (H x values per row) and how they are laid out."""

    encoding: str
    samples: np.ndarray
    width: int
    pad: int
    bigendian: bool
    trim_last: bool


@st.composite
def camera_cases(draw: st.DrawFn) -> CameraCase:
    encoding = draw(st.sampled_from(sorted({**COLOUR16, **YUV422, **BAYER})))
    height, width = draw(st.integers(1, 6)), draw(st.integers(1, 8))
    if encoding in YUV422:
        width, itemsize, per_pixel = 2 * width, 1, 2
    elif encoding in COLOUR16:
        itemsize, per_pixel = 2, len(COLOUR16[encoding])
    else:
        itemsize, per_pixel = BAYER[encoding][1] // 8, 1
    samples = draw(hnp.arrays(np.dtype(f"u{itemsize}"), (height, width * per_pixel)))
    return CameraCase(
        encoding, samples, width, draw(st.integers(0, 9)), draw(st.booleans()), draw(st.booleans())
    )


@settings(max_examples=150, deadline=None)
@given(camera_cases())
def test_camera_encodings_do_not_depend_on_step_or_byte_order(case: CameraCase) -> None:
    height, itemsize = case.samples.shape[0], case.samples.dtype.itemsize
    dense, dense_step = packed(case.samples, itemsize, False, 0)
    reference = image_to_array(PlainImage(height, case.width, case.encoding, 0, dense_step, dense))
    assert reference.dtype == np.uint8 and reference.shape == (height, case.width, 3)
    data, step = packed(case.samples, itemsize, case.bigendian, case.pad)
    if case.trim_last and case.pad:
        data = data[: -case.pad]  # the last row without its padding
    layout = (case.encoding, height, case.width, step, data, case.bigendian)
    for msg in (rclpy_image(*layout), bag_image(*layout)):
        np.testing.assert_array_equal(image_to_array(msg), reference)


# --------------------------------------------------------------------------- compressed


def handmade_png(pixels: np.ndarray, colour_type: int) -> bytes:
    """A PNG written with zlib and struct only (filter 0 on every row), per the PNG spec.

    Colour types: 0 grey, 2 RGB, 4 grey+alpha, 6 RGBA; samples are big-endian for 16 bits.
    """
    height, width = pixels.shape[:2]
    depth = pixels.dtype.itemsize * 8
    samples = pixels.astype(">u2" if depth == 16 else "u1")
    scanlines = b"".join(b"\x00" + samples[r].tobytes() for r in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(scanlines))
        + chunk(b"IEND", b"")
    )


def pattern(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Pixels that differ in every channel, spanning the dtype's range."""
    top = np.iinfo(dtype).max
    count = int(np.prod(shape))
    return (np.arange(count, dtype=np.uint64) * 7919 % (top + 1)).astype(dtype).reshape(shape)


PNG_CASES = {
    "grey8": (pattern((5, 6), np.uint8), 0, lambda p: p),
    "grey16": (pattern((5, 6), np.uint16), 0, lambda p: p),
    "rgb8": (pattern((5, 6, 3), np.uint8), 2, lambda p: p),
    "rgb16": (pattern((5, 6, 3), np.uint16), 2, lambda p: p),
    "rgba8_alpha_dropped": (pattern((5, 6, 4), np.uint8), 6, lambda p: p[..., :3]),
    "grey_alpha_as_grey_rgb": (
        pattern((5, 6, 2), np.uint8),
        4,
        lambda p: np.repeat(p[..., :1], 3, axis=2),
    ),
}


@pytest.mark.parametrize("name", sorted(PNG_CASES))
@pytest.mark.parametrize("fmt", ["png", "rgb8; png compressed bgr8", "mono16; png compressed"])
def test_handmade_png_decodes_exactly(name: str, fmt: str) -> None:
    pixels, colour_type, expected = PNG_CASES[name]
    out = compressed_to_array(CompressedImage(format=fmt, data=handmade_png(pixels, colour_type)))
    assert out.dtype == pixels.dtype
    assert out.flags.c_contiguous and out.flags.writeable
    np.testing.assert_array_equal(out, expected(pixels))


@pytest.mark.parametrize(
    ("channels", "fmt"), [(3, "rgb8; png compressed rgb8"), (4, "rgba8; png compressed rgba8")]
)
def test_encoder_input_named_rgb_is_not_swapped(channels: int, fmt: str) -> None:
    # A publisher that handed RGB(A) memory to OpenCV's encoder says so with "compressed rgb8":
    # the file's channels are then swapped, and the decoded "BGR" is really RGB.
    rgba = pattern((4, 5, channels), np.uint8)
    ok, swapped_file = cv2.imencode(".png", rgba)
    assert ok
    out = compressed_to_array(CompressedImage(format=fmt, data=swapped_file.tobytes()))
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgba[..., :3])


@pytest.mark.parametrize(
    ("pixels", "fmt_string"),
    [
        (pattern((6, 7), np.uint8), "mono8; png compressed mono8"),
        (pattern((6, 7), np.uint16), "mono16; png compressed mono16"),
        (pattern((6, 7, 3), np.uint8), "rgb8; png compressed bgr8"),
        (pattern((6, 7, 3), np.uint16), "rgb16; png compressed bgr16"),
    ],
    ids=["mono8", "mono16", "rgb8", "rgb16"],
)
def test_png_round_trip_is_exact(pixels: np.ndarray, fmt_string: str) -> None:
    fmt, data = array_to_compressed(pixels, "png")
    assert fmt == fmt_string
    # Any ROS subscriber decodes with OpenCV and gets BGR: check the file itself, not only
    # our own decoder.
    decoded_by_opencv = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    expected_bgr = pixels[..., ::-1] if pixels.ndim == 3 else pixels
    np.testing.assert_array_equal(decoded_by_opencv, expected_bgr)
    for msg in (
        CompressedImage(format=fmt, data=data),
        BagCompressedImage(header=bag_header(), format=fmt, data=np.frombuffer(data, np.uint8)),
    ):
        out = compressed_to_array(msg)
        assert out.dtype == pixels.dtype
        np.testing.assert_array_equal(out, pixels)


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        st.sampled_from([np.uint8, np.uint16]),
        st.tuples(st.integers(1, 12), st.integers(1, 12), st.sampled_from([0, 3])).map(
            lambda s: s[:2] if s[2] == 0 else s
        ),
    )
)
def test_png_round_trip_property(pixels: np.ndarray) -> None:
    fmt, data = array_to_compressed(pixels, "png")
    np.testing.assert_array_equal(
        compressed_to_array(CompressedImage(format=fmt, data=data)), pixels
    )


def roadscene(data_dir: Path, kind: str) -> Path:
    files = sorted((data_dir / "roadscene" / kind).glob("*.jpg"))
    if not files:
        pytest.skip(f"no RoadScene {kind} images under {data_dir}")
    return files[0]


def test_roadscene_jpeg_file_decodes_as_rgb(data_dir: Path) -> None:
    path = roadscene(data_dir, "vis")
    bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    msg = CompressedImage(format="jpeg", data=path.read_bytes())
    np.testing.assert_array_equal(compressed_to_array(msg), bgr[..., ::-1])


@pytest.mark.parametrize("kind", ["vis", "ir"])
def test_roadscene_jpeg_round_trip_is_close(data_dir: Path, kind: str) -> None:
    image = cv2.imread(str(roadscene(data_dir, kind)), cv2.IMREAD_UNCHANGED)
    if image.ndim == 3:
        image = np.ascontiguousarray(image[..., ::-1])
    fmt, data = array_to_compressed(image, "jpeg")
    assert fmt == (
        "rgb8; jpeg compressed bgr8" if image.ndim == 3 else "mono8; jpeg compressed mono8"
    )
    out = compressed_to_array(CompressedImage(format=fmt, data=data))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert psnr(out, image) > 40.0
    if image.ndim == 3:
        # The bound is tight enough to notice swapped channels.
        assert psnr(out[..., ::-1], image) < psnr(out, image) - 10.0
    _, low = array_to_compressed(image, "jpeg", jpeg_quality=10)
    assert len(low) < len(data)


def test_compressed_depth_16bit_png() -> None:
    pixels = pattern((4, 6), np.uint16)
    header = struct.pack("<iff", 0, 0.0, 0.0)  # compressed_depth_image_transport ConfigHeader
    for fmt in ("16UC1; compressedDepth png", "16UC1; compressedDepth"):
        msg = CompressedImage(format=fmt, data=header + handmade_png(pixels, 0))
        np.testing.assert_array_equal(compressed_to_array(msg), pixels)


GARBAGE = b"this is not an image at all" * 8
COMPRESSED_ERRORS = {
    "garbage_jpeg": (
        CompressedImage(format="jpeg", data=GARBAGE),
        ["could not decode 216 bytes", "'jpeg'"],
    ),
    "garbage_ros_format": (
        CompressedImage(format="rgb8; jpeg compressed bgr8", data=GARBAGE),
        ["'rgb8; jpeg compressed bgr8'"],
    ),
    "truncated_png": (
        CompressedImage(format="png", data=handmade_png(pattern((8, 8), np.uint8), 0)[:40]),
        ["could not decode 40 bytes", "'png'"],
    ),
    "png_signature_only": (
        CompressedImage(format="png", data=b"\x89PNG\r\n\x1a\n"),
        ["could not decode", "'png'"],
    ),
    "empty": (
        CompressedImage(format="mono16; png compressed", data=b""),
        ["'mono16; png compressed'", "no data"],
    ),
    "empty_rosbags": (
        BagCompressedImage(header=bag_header(), format="jpeg", data=np.zeros(0, np.uint8)),
        ["'jpeg'", "no data"],
    ),
    "depth_float": (
        CompressedImage(format="32FC1; compressedDepth png", data=bytes(20)),
        ["'32FC1; compressedDepth png'", "16UC1"],
    ),
    "depth_rvl": (
        CompressedImage(format="16UC1; compressedDepth rvl", data=bytes(40)),
        ["'16UC1; compressedDepth rvl'", "no PNG", "RVL"],
    ),
    "raw_image_given": (
        Image(height=1, width=1, encoding="mono8", step=1, data=b"x"),
        ["sensor_msgs/CompressedImage", "Image", "format"],
    ),
}


@pytest.mark.parametrize("name", sorted(COMPRESSED_ERRORS))
def test_compressed_errors(name: str) -> None:
    msg, fragments = COMPRESSED_ERRORS[name]
    assert_one_line_error(lambda: compressed_to_array(msg), *fragments)


@pytest.mark.parametrize(
    ("array", "fmt", "fragments"),
    [
        (np.zeros((2, 2), np.uint16), "jpeg", ["jpeg", "uint8", "uint16"]),
        (np.zeros((2, 2), np.float32), "png", ["png", "uint8 or uint16", "float32"]),
        (np.zeros((2, 2, 4), np.uint8), "png", ["HxWx3", "(2, 2, 4)"]),
        (np.zeros((0, 2), np.uint8), "png", ["non-empty", "(0, 2)"]),
        (np.zeros((2, 2), np.uint8), "bmp", ["unsupported compressed format 'bmp'"]),
    ],
    ids=["jpeg_uint16", "png_float", "png_rgba", "png_empty", "bmp"],
)
def test_array_to_compressed_errors(array: np.ndarray, fmt: str, fragments: list[str]) -> None:
    assert_one_line_error(lambda: array_to_compressed(array, fmt), *fragments)
