"""The fusion worker: one thread that fuses the newest pair, fed through a one-slot mailbox.

The lesson of image_pipeline's nodes: the network takes from tens of milliseconds (GPU, small
images) to many seconds (CPU, VGA), so inference never runs in a DDS callback. The
synchronizer callback only :meth:`~FusionWorker.offer` s the newest pair; a pair replaced
before the worker took it is dropped, and the caller counts it. Nothing queues without bound:
a slow model shows up as drops, never as growing latency or memory.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

Pair = tuple[Any, Any]
"""(thermal message, RGB message)."""


class FusionWorker:
    """A daemon thread calling ``process(thermal_msg, rgb_msg)`` for the newest offered pair.

    ``on_error`` gets any exception ``process`` lets through, so that one bad pair never ends
    the thread. The thread is a daemon: a forward pass cannot be interrupted, and the node's
    ``main`` decides what to do when one is still running at exit.
    """

    def __init__(
        self,
        process: Callable[[Any, Any], None],
        on_error: Callable[[Exception], None],
        name: str = "gifnet-fusion",
    ) -> None:
        self._process = process
        self._on_error = on_error
        self._cv = threading.Condition()
        self._mailbox: Pair | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(self, thermal_msg: Any, rgb_msg: Any) -> bool:
        """Leave a pair for the worker; True if it replaced one not yet taken (a drop)."""
        with self._cv:
            replaced = self._mailbox is not None
            self._mailbox = (thermal_msg, rgb_msg)
            self._cv.notify()
        return replaced

    def clear(self) -> bool:
        """Empty the mailbox (deactivated, clock jumped back); True if a pair was dropped."""
        with self._cv:
            dropped = self._mailbox is not None
            self._mailbox = None
        return dropped

    def close(self, timeout: float) -> bool:
        """Stop taking pairs; False if the thread is still inside ``process`` after ``timeout``."""
        with self._cv:
            self._stopping = True
            self._mailbox = None
            self._cv.notify_all()
        if self._thread.ident is None:
            return True  # never started
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._mailbox is None and not self._stopping:
                    self._cv.wait()
                if self._stopping:
                    return
                pair, self._mailbox = self._mailbox, None
            try:
                self._process(*pair)
            except Exception as exc:  # the worker must outlive any single bad pair
                if self._stopping:
                    return  # the node is going away; its publishers may already be gone
                self._on_error(exc)
