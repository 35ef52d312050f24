"""The node's fusion thread: one thread that fuses the newest pair of each camera head.

The lesson of image_pipeline's nodes: the network takes from tens of milliseconds (GPU, small
images) to many seconds (CPU, VGA), so inference never runs in a DDS callback. The
synchronizer callback only :meth:`~FusionThread.offer` s the newest pair of its head into a
one-slot mailbox per head; a pair replaced before the worker took it is dropped, and the caller
counts it. The worker takes every head's waiting pair at once, so heads of one size can share a
batch and a head whose camera stopped never holds the others up. Nothing queues without bound:
a slow model shows up as drops, never as growing latency or memory.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

MessagePair = tuple[Any, Any]
"""(thermal message, RGB message)."""


class FusionThread:
    """A daemon thread calling ``process({head: (thermal_msg, rgb_msg)})`` with the newest pair
    offered for each head since its last call.

    ``on_error`` gets any exception ``process`` lets through, so that one bad pair never ends
    the thread. The thread is a daemon: a forward pass cannot be interrupted, and the node's
    ``main`` decides what to do when one is still running at exit.
    """

    def __init__(
        self,
        process: Callable[[dict[str, MessagePair]], None],
        on_error: Callable[[Exception], None],
        name: str = "gifnet-fusion",
    ) -> None:
        self._process = process
        self._on_error = on_error
        self._cv = threading.Condition()
        self._mailbox: dict[str, MessagePair] = {}
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(self, head: str, thermal_msg: Any, rgb_msg: Any) -> bool:
        """Leave a pair of ``head`` for the worker; True if it replaced one not yet taken."""
        with self._cv:
            replaced = head in self._mailbox
            self._mailbox[head] = (thermal_msg, rgb_msg)
            self._cv.notify()
        return replaced

    def clear(self) -> list[str]:
        """Empty the mailboxes (deactivated, clock jumped back); the heads whose pair dropped."""
        with self._cv:
            dropped = list(self._mailbox)
            self._mailbox = {}
        return dropped

    def close(self, timeout: float) -> bool:
        """Stop taking pairs; False if the thread is still inside ``process`` after ``timeout``."""
        with self._cv:
            self._stopping = True
            self._mailbox = {}
            self._cv.notify_all()
        if self._thread.ident is None:
            return True  # never started
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._mailbox and not self._stopping:
                    self._cv.wait()
                if self._stopping:
                    return
                pairs, self._mailbox = self._mailbox, {}
            try:
                self._process(pairs)
            except Exception as exc:  # the worker must outlive any single bad pair
                if self._stopping:
                    return  # the node is going away; its publishers may already be gone
                self._on_error(exc)
