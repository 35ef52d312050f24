"""ROS ``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage`` <-> numpy, without ROS.

This is the one conversion used by the node and by the offline bag tool. It stands in for
``cv_bridge``, which is not pip-installable and would tie the offline tool to a ROS install.
Messages are duck-typed: anything with the message's fields works, so rclpy messages and the
``rosbags`` library's dataclasses go through the same code.

Conventions (the network wants them, and every caller relies on them):

* Colour images come back as ``HxWx3 uint8`` in **RGB** order; alpha is dropped.
* ``8UC3`` is read and written as ``bgr8``: OpenCV, which is what publishes ``8UC3``, keeps
  3-channel images in BGR order.
* Grey images come back as ``HxW`` ``uint8`` (``mono8``/``8UC1``), ``uint16``
  (``mono16``/``16UC1``) or ``float32`` (``32FC1``) in native byte order. Values are not scaled:
  a thermal camera's kelvin or degrees, NaN and inf included, reach ``thermal.py`` untouched.
* 16-bit colour (``rgb16``, ``bgr16``, ``rgba16``, ``bgra16``, ``bayer_*16``) comes back as
  8-bit RGB scaled by 255/65535 and rounded, i.e. ``round(x / 257)``: the full range maps onto
  the full range, as cv_bridge converts ``rgb16`` to ``rgb8`` and as the ``none`` rule of
  ``thermal.py`` maps 16-bit grey, and unlike ``x >> 8`` it does not darken by half a level on
  average. Grey 16-bit keeps its counts because thermal counts fill a narrow, scene-dependent
  band that only a per-frame stretch can use; colour pixels are already display-referred, so a
  fixed scale is the faithful one.
* YUV 4:2:2 (``uyvy``/``yuv422``, ``yuyv``/``yuv422_yuy2``) is converted with OpenCV's
  BT.601 limited-range formula, as cv_bridge converts it for a subscriber asking for ``rgb8``.
  The width must be even: two pixels share one U and one V sample.
* Bayer mosaics (``bayer_rggb8``, ``bayer_bggr8``, ``bayer_gbrg8``, ``bayer_grbg8`` and their
  ``16`` variants) are demosaiced bilinearly by OpenCV, at full depth before the scaling: this
  is cv_bridge's Bayer to ``rgb8`` conversion and image_proc's ``debayer:=0``. (image_proc's
  DebayerNode defaults to VNG, which OpenCV has for 8-bit mosaics only.)
* Returned arrays are fresh C-contiguous copies. The message buffer may be reused by the
  middleware (or by the caller) after the callback returns, so a view would change under the
  network's feet. For grey and 8-bit images the copy is made exactly once, fused with the row
  crop, channel reorder and byte swap, so it costs one pass over the pixels; 16-bit colour
  takes one more pass for the scaling, and big-endian or unaligned 16-bit colour another one
  before OpenCV can read it.

Buffer size rule for raw images: ROS defines ``len(data) == step * height``. We accept a
buffer whose last row lacks its padding (``step * (height - 1) + width * bytes_per_pixel``
bytes), since every pixel is still present, and reject anything shorter or longer. A longer
buffer almost always means the height, width or encoding fields disagree with the pixels, and
cropping it silently would hand the network a plausible-looking wrong image.
"""

from __future__ import annotations

import struct
from array import array as py_array
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.lib.stride_tricks import as_strided


class ImageConversionError(ValueError):
    """A message or array that cannot be converted; the message is one line naming the problem."""


@dataclass(frozen=True)
class _Layout:
    """How one ROS encoding lays a pixel out in memory.

    ``channels`` counts the values stored per pixel (2 for YUV 4:2:2: a chroma and a luma
    byte; 1 for a Bayer mosaic). For colour encodings, ``to_rgb``/``from_rgb`` are the OpenCV
    colour conversion codes to and from RGB (None: already RGB). ``cv2.cvtColor`` does the
    reorder, the alpha drop or fill, the 4:2:2 chroma upsampling or the demosaic, and the copy
    in one pass about a hundred times faster than a reversed-stride numpy copy (0.05 ms against
    5.6 ms for 640x480 ``bgr8``), and it reads padded rows in place. ``pixels_per_group`` is 2
    where pixel pairs share samples (YUV 4:2:2), so the width must be a multiple of it.
    """

    dtype: np.dtype
    channels: int = 1
    to_rgb: int | None = None
    from_rgb: int | None = None
    pixels_per_group: int = 1

    @property
    def bytes_per_pixel(self) -> int:
        return self.dtype.itemsize * self.channels

    @property
    def grey(self) -> bool:
        return self.channels == 1 and self.to_rgb is None


_U8 = np.dtype(np.uint8)
_U16 = np.dtype(np.uint16)
_LAYOUTS: dict[str, _Layout] = {
    "mono8": _Layout(_U8),
    "8UC1": _Layout(_U8),
    "mono16": _Layout(_U16),
    "16UC1": _Layout(_U16),
    "32FC1": _Layout(np.dtype(np.float32)),
    "rgb8": _Layout(_U8, 3),
    "bgr8": _Layout(_U8, 3, cv2.COLOR_BGR2RGB, cv2.COLOR_RGB2BGR),
    "8UC3": _Layout(_U8, 3, cv2.COLOR_BGR2RGB, cv2.COLOR_RGB2BGR),
    "rgba8": _Layout(_U8, 4, cv2.COLOR_RGBA2RGB, cv2.COLOR_RGB2RGBA),
    "bgra8": _Layout(_U8, 4, cv2.COLOR_BGRA2RGB, cv2.COLOR_RGB2BGRA),
}

# OpenCV names a Bayer pattern by the second row's first two pixels (its historical
# convention; 4.x added aliases such as COLOR_BayerRGGB2RGB, which Humble's OpenCV 4.5 lacks):
# ROS bayer_rggb is OpenCV's BayerBG, as in cv_bridge and image_proc.
_UYVY = _Layout(_U8, 2, cv2.COLOR_YUV2RGB_UYVY, pixels_per_group=2)
_YUYV = _Layout(_U8, 2, cv2.COLOR_YUV2RGB_YUYV, pixels_per_group=2)
_READ_ONLY_LAYOUTS: dict[str, _Layout] = {
    "rgb16": _Layout(_U16, 3),
    "bgr16": _Layout(_U16, 3, cv2.COLOR_BGR2RGB),
    "rgba16": _Layout(_U16, 4, cv2.COLOR_RGBA2RGB),
    "bgra16": _Layout(_U16, 4, cv2.COLOR_BGRA2RGB),
    "uyvy": _UYVY,
    "yuv422": _UYVY,  # the older name of uyvy in sensor_msgs/image_encodings
    "yuyv": _YUYV,
    "yuv422_yuy2": _YUYV,  # the older name of yuyv
    **{
        f"bayer_{pattern}{bits}": _Layout(dtype, 1, code)
        for pattern, code in (
            ("rggb", cv2.COLOR_BayerBG2RGB),
            ("bggr", cv2.COLOR_BayerRG2RGB),
            ("gbrg", cv2.COLOR_BayerGR2RGB),
            ("grbg", cv2.COLOR_BayerGB2RGB),
        )
        for bits, dtype in ((8, _U8), (16, _U16))
    },
}

_READABLE_LAYOUTS = {**_LAYOUTS, **_READ_ONLY_LAYOUTS}

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_READABLE_LAYOUTS)
"""Raw ``sensor_msgs/Image`` encodings :func:`image_to_array` reads (the node's inputs)."""

WRITABLE_ENCODINGS: tuple[str, ...] = tuple(_LAYOUTS)
"""The ones :func:`array_to_image_fields` also writes: the others would need a 16-bit colour,
a chroma-subsampled or a mosaiced array, which nothing in the package produces."""

# 16-bit colour -> 8-bit: round(x * 255 / 65535); cv2.convertScaleAbs rounds and saturates.
_SIXTEEN_TO_EIGHT = 255.0 / 65535.0

_IMAGE_FIELDS = ("height", "width", "encoding", "is_bigendian", "step", "data")
_COMPRESSED_FIELDS = ("format", "data")

# compressed_depth_image_transport prefixes its PNG with a 12-byte ConfigHeader
# (int32 compression format, float32 depthParam[2]); format 0 is PNG.
_DEPTH_HEADER = struct.Struct("<iff")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _layout(encoding: str, writing: bool = False) -> _Layout:
    try:
        return (_LAYOUTS if writing else _READABLE_LAYOUTS)[encoding]
    except (KeyError, TypeError):  # TypeError: an unhashable value in the encoding field
        read_only = writing and isinstance(encoding, str) and encoding in _READ_ONLY_LAYOUTS
    if read_only:
        raise ImageConversionError(
            f"encoding {encoding!r} is read, not written, here "
            f"(written: {', '.join(WRITABLE_ENCODINGS)})"
        )
    supported = WRITABLE_ENCODINGS if writing else SUPPORTED_ENCODINGS
    raise ImageConversionError(
        f"unsupported encoding {encoding!r} (supported: {', '.join(supported)})"
    )


def _fields(msg: Any, names: tuple[str, ...], kind: str) -> list[Any]:
    """Read the message fields, turning a wrong message type into a one-line error."""
    missing = [name for name in names if not hasattr(msg, name)]
    if missing:
        raise ImageConversionError(
            f"expected a sensor_msgs/{kind}-like message, got {type(msg).__name__} "
            f"without field(s) {', '.join(missing)}"
        )
    return [getattr(msg, name) for name in names]


def _byte_buffer(data: Any) -> np.ndarray:
    """A 1-D uint8 view of the message data, without copying whenever the type allows.

    rclpy hands out ``array.array('B')`` (or ``bytes`` when the user set it), rosbags hands out
    numpy ``uint8`` arrays; both are wrapped zero-copy. A list of ints is converted, which is
    the only case that costs a Python-level pass and is only seen in hand-built messages.
    """
    if isinstance(data, np.ndarray):
        if data.dtype not in (np.uint8, np.int8):
            raise ImageConversionError(f"data is a numpy array of {data.dtype}, expected uint8")
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if isinstance(data, (bytes, bytearray, memoryview, py_array)):
        view = memoryview(data)
        if view.itemsize != 1:
            raise ImageConversionError(
                f"data has {view.itemsize}-byte items ({view.format!r}), expected bytes"
            )
        return np.frombuffer(view, dtype=np.uint8)
    if isinstance(data, (list, tuple)):
        try:
            return np.asarray(data, dtype=np.uint8)
        except (OverflowError, ValueError, TypeError):
            raise ImageConversionError(
                "data is a list that is not all integers in 0..255"
            ) from None
    raise ImageConversionError(
        f"data is a {type(data).__name__}, expected bytes, array.array, list or numpy uint8"
    )


def image_to_array(msg: Any) -> np.ndarray:
    """Convert a ``sensor_msgs/Image`` (rclpy or rosbags) to a fresh numpy array.

    See the module docstring for the output conventions and the buffer size rule. Raises
    :class:`ImageConversionError` naming the encoding, sizes, step or byte counts at fault.
    """
    height, width, encoding, is_bigendian, step, data = _fields(msg, _IMAGE_FIELDS, "Image")
    layout = _layout(encoding)
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"image size {width}x{height} for {encoding!r} is empty")
    if width % layout.pixels_per_group:
        raise ImageConversionError(
            f"width {width} of {encoding!r} is odd: 4:2:2 pixels come in pairs sharing U and V"
        )
    row_bytes = width * layout.bytes_per_pixel
    if step < row_bytes:
        raise ImageConversionError(
            f"step {step} is smaller than width*bytes_per_pixel = {row_bytes} "
            f"for {encoding!r} {width}x{height}"
        )
    buffer = _byte_buffer(data)
    full = step * height
    minimum = full - step + row_bytes
    if buffer.size < minimum:
        raise ImageConversionError(
            f"data has {buffer.size} bytes, expected at least step*height = {full} "
            f"(step {step}, {encoding!r} {width}x{height})"
        )
    if buffer.size > full:
        raise ImageConversionError(
            f"data has {buffer.size} bytes, more than step*height = {full} "
            f"(step {step}, {encoding!r} {width}x{height}): height, width or encoding is wrong"
        )

    # Rows of pixel bytes with the padding skipped; no copy yet, and no read past `minimum`.
    rows = as_strided(buffer, shape=(height, row_bytes), strides=(step, 1), writeable=False)
    stored = layout.dtype.newbyteorder(">" if is_bigendian else "<")
    pixels = rows.view(stored)
    # The copy, which also crops the padding: grey images are swapped to native byte order by
    # astype, colour ones reordered, upsampled or demosaiced to RGB by cvtColor.
    if layout.grey:
        return pixels.astype(layout.dtype, order="C")
    if layout.dtype.itemsize > 1 and not (pixels.dtype.isnative and pixels.flags.aligned):
        pixels = pixels.astype(layout.dtype)  # OpenCV reads neither swapped nor unaligned words
    if layout.channels > 1:
        pixels = pixels.reshape(height, width, layout.channels)
    if layout.to_rgb is not None:
        pixels = cv2.cvtColor(pixels, layout.to_rgb)
    elif layout.dtype.itemsize == 1:
        return pixels.copy()
    if pixels.dtype == _U16:
        return cv2.convertScaleAbs(pixels, alpha=_SIXTEEN_TO_EIGHT)
    return pixels


def array_to_image_fields(array: np.ndarray, encoding: str) -> dict[str, Any]:
    """The ``sensor_msgs/Image`` fields (without header) that carry ``array`` as ``encoding``.

    ``array`` follows the same conventions :func:`image_to_array` returns: ``HxW`` uint8 for
    ``mono8``/``8UC1``, ``HxW`` uint16 for ``mono16``/``16UC1``, ``HxW`` float32 for ``32FC1``,
    and ``HxWx3`` uint8 **RGB** for the colour encodings (written as BGR for ``bgr8``/``8UC3``,
    with alpha 255 for ``rgba8``/``bgra8``). Rows are unpadded and data is little-endian, so
    ``is_bigendian`` is 0 on every host. A dtype or shape that does not match the encoding is
    refused rather than cast, because a silent cast (float64 -> float32, int -> uint8) changes
    the values the receiver sees. Only :data:`WRITABLE_ENCODINGS` are written.
    """
    layout = _layout(encoding, writing=True)
    array = np.asarray(array)
    grey = layout.grey
    expected_shape = "HxW" if grey else "HxWx3 RGB"
    shape_ok = array.ndim == 2 if grey else array.ndim == 3 and array.shape[2] == 3
    dtype_ok = array.dtype.kind == layout.dtype.kind and array.dtype.itemsize == (
        layout.dtype.itemsize
    )
    if not (shape_ok and dtype_ok):
        raise ImageConversionError(
            f"encoding {encoding!r} needs a {expected_shape} {layout.dtype} array, "
            f"got shape {array.shape} {array.dtype}"
        )
    height, width = array.shape[:2]
    if height == 0 or width == 0:
        raise ImageConversionError(f"image size {width}x{height} for {encoding!r} is empty")

    if grey:
        stored = array.astype(layout.dtype.newbyteorder("<"), copy=False)
    elif layout.from_rgb is None:
        stored = array
    else:  # cvtColor fills alpha with 255 when it adds a channel
        stored = cv2.cvtColor(np.ascontiguousarray(array), layout.from_rgb)
    return {
        "height": int(height),
        "width": int(width),
        "encoding": encoding,
        "is_bigendian": 0,
        "step": int(width) * layout.bytes_per_pixel,
        "data": stored.tobytes(),
    }


@dataclass(frozen=True)
class _CompressedFormat:
    """Our reading of a CompressedImage ``format`` string.

    image_transport writes ``"<original encoding>; <codec> compressed <encoder input>"``,
    e.g. ``"rgb8; jpeg compressed bgr8"`` or ``"mono16; png compressed"``, and
    compressed_depth_image_transport writes ``"16UC1; compressedDepth png"``; older or
    third-party publishers write just ``"jpeg"`` or ``"png"``.

    The codec is detected from the payload by OpenCV, so it is not taken from the string. The
    original encoding does not change the result either: image_transport converts colour
    images to ``bgr8``/``bgr16`` before encoding, and a JPEG/PNG decoder returns BGR for those,
    so the RGB original comes back as RGB after the one swap we always do. The only part that
    matters is the encoder input: if it names an RGB order (``rgb8``, ``rgba8``, ``rgb16``...),
    the publisher handed RGB memory to an encoder that assumes BGR, the file's channels are
    swapped, and the decoder's "BGR" output is in fact RGB, so we do not swap.
    """

    text: str
    encoder_input_is_rgb: bool
    depth: bool

    @classmethod
    def parse(cls, text: str) -> _CompressedFormat:
        scheme = text.split(";", 1)[-1].lower().split()
        after = scheme[scheme.index("compressed") + 1 :] if "compressed" in scheme else []
        return cls(
            text=text,
            encoder_input_is_rgb=bool(after) and after[0].startswith("rgb"),
            depth="compresseddepth" in scheme,
        )


def compressed_to_array(msg: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG, PNG, or 16-bit compressedDepth PNG).

    Returns ``HxW`` uint8 or uint16 for grey images and ``HxWx3`` in RGB order for colour ones
    (alpha dropped; a grey+alpha PNG, which OpenCV expands to BGRA, comes back as grey RGB).
    The format string is read as described in :class:`_CompressedFormat`. Empty or undecodable
    data raises :class:`ImageConversionError` naming the format string.
    """
    text, data = _fields(msg, _COMPRESSED_FIELDS, "CompressedImage")
    fmt = _CompressedFormat.parse(str(text))
    buffer = _byte_buffer(data)
    if buffer.size == 0:
        raise ImageConversionError(f"CompressedImage with format {fmt.text!r} has no data")
    if fmt.depth:
        buffer = _strip_depth_header(buffer, fmt.text)
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        image = None
    if image is None:
        raise ImageConversionError(
            f"could not decode {buffer.size} bytes of CompressedImage data with format "
            f"{fmt.text!r} (not a valid JPEG/PNG)"
        )
    if image.ndim == 2:
        return image
    alpha = image.shape[2] == 4
    if fmt.encoder_input_is_rgb:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR) if alpha else image
    return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if alpha else cv2.COLOR_BGR2RGB)


def _strip_depth_header(buffer: np.ndarray, text: str) -> np.ndarray:
    """Skip compressed_depth_image_transport's ConfigHeader in front of the PNG.

    Only the lossless 16-bit case is supported: a 32FC1 depth image is stored as quantised
    inverse depth, which is meaningless for thermal data, and RVL is not an image codec OpenCV
    reads. Both are refused by name instead of returning wrong pixels.
    """
    original = text.split(";", 1)[0].strip()
    if original not in ("16UC1", "mono16"):
        raise ImageConversionError(
            f"compressedDepth format {text!r}: only 16UC1/mono16 originals are supported"
        )
    header = _DEPTH_HEADER.size
    if buffer[header : header + len(_PNG_SIGNATURE)].tobytes() != _PNG_SIGNATURE:
        raise ImageConversionError(
            f"compressedDepth format {text!r}: no PNG after the {header}-byte header "
            f"in {buffer.size} bytes (RVL is not supported)"
        )
    return buffer[header:]


def array_to_compressed(
    array: np.ndarray, fmt: str = "jpeg", jpeg_quality: int = 95
) -> tuple[str, bytes]:
    """Encode ``array`` as a CompressedImage ``(format, data)`` pair, image_transport style.

    ``array``: ``HxW`` uint8, ``HxWx3`` uint8 RGB, and for ``fmt="png"`` also ``HxW`` or
    ``HxWx3`` uint16. Colour is encoded from BGR, as image_transport does, so the format
    string names ``bgr8``/``bgr16`` as the encoder input and any ROS subscriber decodes it
    correctly. ``jpeg_quality`` is OpenCV's 0..100 JPEG quality (image_transport's default is
    95).
    """
    if fmt not in ("jpeg", "png"):
        raise ImageConversionError(f"unsupported compressed format {fmt!r} (use 'jpeg' or 'png')")
    array = np.asarray(array)
    allowed = (np.dtype(np.uint8), np.dtype(np.uint16)) if fmt == "png" else (np.dtype(np.uint8),)
    colour = array.ndim == 3 and array.shape[2] == 3
    if array.dtype not in allowed or not (array.ndim == 2 or colour) or 0 in array.shape:
        raise ImageConversionError(
            f"{fmt} needs a non-empty HxW or HxWx3 RGB {' or '.join(map(str, allowed))} array, "
            f"got shape {array.shape} {array.dtype}"
        )
    bits = array.dtype.itemsize * 8
    if colour:
        original, encoder_input = f"rgb{bits}", f"bgr{bits}"
        pixels = cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_RGB2BGR)
    else:
        original, encoder_input = f"mono{bits}", f"mono{bits}"
        pixels = np.ascontiguousarray(array)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(f".{fmt}", pixels, params)
    if not ok:
        raise ImageConversionError(f"OpenCV failed to encode a {array.shape} array as {fmt}")
    return f"{original}; {fmt} compressed {encoder_input}", encoded.tobytes()


def fused_pixels(encoding: str, luminance: np.ndarray, colour: np.ndarray | None) -> np.ndarray:
    """The engine's result in the layout an output `encoding` needs.

    ``mono8`` takes the fused luminance; colour encodings take the colour result,
    or the luminance in three channels when the inputs gave a grey result, so a
    subscriber that asked for rgb8/bgr8 always gets what it asked for.
    """
    if encoding == "mono8":
        return luminance
    if colour is not None:
        return colour
    return np.repeat(luminance[:, :, None], 3, axis=2)
