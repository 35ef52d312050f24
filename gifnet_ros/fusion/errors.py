"""One-line error text, shared by the node's log and the offline tools' error messages.

Exceptions from torch, ONNX Runtime and rosbags often span several lines or pages; the node
logs one line per event and the tools print one line before exiting, so both pass the cause
through :func:`one_line`. It lives here, the lowest layer both import, so that the two say a
failure the same way.
"""

from __future__ import annotations

LIMIT = 400
"""The most characters of a cause one message quotes: enough for a path and a torch error's
first sentence, short enough that a log line stays readable."""


def one_line(exc: BaseException) -> str:
    """``exc``'s message with its white space folded to single spaces and cut to LIMIT
    characters; its type name when the message is empty (``raise ValueError()``), so the text
    after ``failed:`` is never blank."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= LIMIT else text[: LIMIT - 3] + "..."
