"""Frozen thermal streams: a camera's shutter pause (flat-field correction) seen from its frames.

Uncooled thermal cores close their shutter every few minutes to recalibrate; for 0.5-3 s the
image stops changing. Some drivers repeat the last frame meanwhile (new stamps, the very same
pixels), others send nothing. Either way a moving RGB frame fused with a frozen thermal one
ghosts: a walking person appears twice. A live sensor's frames always differ in their noise,
so a frame whose bytes equal the previous one is a repeat, not a still scene.

:class:`FreezeWatch` tracks one thermal stream: it tells repeated frames (with how long the
pixels have been frozen) and a stream that stopped while the RGB camera goes on, and counts a
pause once, however many frames it lasts. It imports no ROS; the node decides what a frozen
pair becomes (``thermal.freeze_action``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

FREEZE_ACTIONS = ("skip", "hold", "ignore")
"""What a frozen thermal image's pair becomes: not fused, fused while the image is young
enough, or fused as if nothing happened (node: thermal.freeze_action; bag tools:
--freeze-action)."""


@dataclass(frozen=True)
class Pause:
    """A pause that just began: ``repeat`` (the same frame again) or ``silent`` (no frame)."""

    kind: str
    since_ns: int
    """Stamp of the last thermal frame that was new."""


class FreezeWatch:
    """One thermal stream's frozen state, shared by the thread that receives frames and the one
    that fuses them (every method takes the lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pixels: bytes | None = None
        self._since_ns = 0  # stamp of the first frame that carried self._pixels
        self._latest_ns: int | None = None  # newest thermal stamp received
        self._pause: str | None = None  # the kind of the pause under way
        self.pauses = 0

    def frame(self, pixels: bytes, stamp_ns: int) -> tuple[int | None, Pause | None]:
        """A thermal frame about to be fused: (the stamp its pixels first came with when it
        repeats the previous frame, else None; the pause this begins, if any). Comparing the
        bytes costs well under a millisecond for a 640x512 mono16 frame."""
        with self._lock:
            if self._pixels is not None and pixels == self._pixels:
                return self._since_ns, self._begin("repeat", self._since_ns)
            self._pixels, self._since_ns = bytes(pixels), stamp_ns
            self._pause = None
            return None, None

    def received(self, stamp_ns: int) -> None:
        """A thermal message arrived, fused or not: a newer stamp ends a silent pause."""
        with self._lock:
            if self._latest_ns is None or stamp_ns > self._latest_ns:
                self._latest_ns = stamp_ns
                if self._pause == "silent":
                    self._pause = None

    def silent(self, rgb_stamp_ns: int, timeout_ns: int) -> tuple[int | None, Pause | None]:
        """An RGB frame arrived: (the newest thermal stamp when none came within ``timeout_ns``
        before it, else None; the pause this begins, if any)."""
        with self._lock:
            latest = self._latest_ns
            if latest is None or rgb_stamp_ns - latest <= timeout_ns:
                return None, None
            return latest, self._begin("silent", latest)

    def _begin(self, kind: str, since_ns: int) -> Pause | None:
        """Count a pause when none is under way (one per pause, however many frames)."""
        if self._pause is not None:
            return None
        self._pause = kind
        self.pauses += 1
        return Pause(kind, since_ns)
