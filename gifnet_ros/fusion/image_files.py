"""Image files on disk: read in the engine's channel order, pair folders by name, write safely.

Shared by the command-line tools (gifnet-fuse, gifnet-make-bag, gifnet-eval,
gifnet-fuse-bag's report, gifnet-demo) so that they agree on which files are
images, how folder pairs are matched, how colour channels are ordered, and how
an output is written without ever leaving half a file. No ROS here.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm"})


class ImageFileError(Exception):
    """A file that cannot be read or written as an image; the message is one line."""


def read_image(path: Path) -> np.ndarray:
    """Read grey (8- or 16-bit) as H×W and colour as H×W×3 in RGB order (alpha dropped)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageFileError(f"{path}: cannot read as an image ({exc.strerror})") from None
    return decode_image(data, path)


def decode_image(data: bytes, path: Path) -> np.ndarray:
    """``read_image`` on a file's bytes already in memory (a caller that also hashes them
    reads the file once); ``path`` only names it in the error."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
    if image is None:
        raise ImageFileError(f"{path}: cannot read as an image")
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    if image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader never sees half a file.

    The bytes go to a uniquely named temporary file beside `path`, which is
    renamed into place when complete and removed on any failure, so an existing
    good file survives a failed write. The file gets the usual permissions
    (0666 less the umask), like any other file the tool writes.
    """
    path = Path(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_image(path: Path, image: np.ndarray) -> None:
    """Write grey or RGB `image` to `path` atomically: a reader never sees half a file.

    The file is encoded beside its destination under a temporary name and
    renamed into place, so an existing good file survives a failed write.
    """
    path = Path(path)
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, encoded = cv2.imencode(path.suffix or ".png", pixels)
    if not ok:
        raise ImageFileError(f"{path}: cannot encode a {image.dtype} image as {path.suffix!r}")
    write_bytes_atomic(path, encoded.tobytes())


@dataclass
class FolderPairs:
    """Files of two folders matched by name (stem; the extensions may differ)."""

    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    only_first: list[Path] = field(default_factory=list)
    only_second: list[Path] = field(default_factory=list)


def pair_folders(first: Path, second: Path) -> FolderPairs:
    """Match the image files of two folders by file name, in sorted name order."""

    def images(folder: Path) -> dict[str, Path]:
        if not folder.is_dir():
            raise ImageFileError(f"{folder}: not a directory")
        return {
            p.stem: p
            for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        }

    a, b = images(Path(first)), images(Path(second))
    return FolderPairs(
        pairs=[(a[name], b[name]) for name in sorted(a.keys() & b.keys())],
        only_first=[a[name] for name in sorted(a.keys() - b.keys())],
        only_second=[b[name] for name in sorted(b.keys() - a.keys())],
    )
