"""argparse ``type=`` converters the command-line tools share, so that a flag such as
``--size`` means the same thing (and fails with the same message) in every tool.

Sizes are always written ``WIDTHxHEIGHT`` on the command line, as OpenCV and image viewers
give them, and come back as ``(width, height)``: the order ``cv2.resize`` takes.
"""

from __future__ import annotations

import argparse
import re

from gifnet_ros.models import MIN_SIZE


def width_height(text: str) -> tuple[int, int]:
    """``WxH`` -> ``(width, height)``, both at least 1."""
    match = re.fullmatch(r"(\d+)x(\d+)", text.strip().lower())
    if not match or 0 in (int(match[1]), int(match[2])):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 96x72, got {text!r}")
    return int(match[1]), int(match[2])


def fusion_width_height(text: str) -> tuple[int, int]:
    """``WxH`` -> ``(width, height)`` of an image the networks can fuse: both at least
    MIN_SIZE, so that a bad size fails while parsing the flags, not mid-run."""
    width, height = width_height(text)
    if min(width, height) < MIN_SIZE:
        raise argparse.ArgumentTypeError(
            f"size {text!r}: GIFNet needs at least {MIN_SIZE}x{MIN_SIZE}"
        )
    return width, height


def positive_int(text: str) -> int:
    """An integer >= 1 (counts, steps, sizes)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A number > 0 (a span of time that must not be empty)."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    """A number >= 0 (jitter, latency); NaN is refused."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value
