"""The one-line error text the node's log and the offline tools share (gifnet_ros.fusion.errors)."""

from __future__ import annotations

from gifnet_ros.fusion.errors import LIMIT, one_line


def test_white_space_folds_to_one_line():
    assert one_line(ValueError("a\n  b\tc\r\n")) == "a b c"


def test_an_empty_message_is_the_type_name():
    assert one_line(ValueError()) == "ValueError"
    assert one_line(RuntimeError(" \n ")) == "RuntimeError"


def test_a_long_message_is_cut_with_an_ellipsis():
    exact = "x" * LIMIT
    assert one_line(ValueError(exact)) == exact
    cut = one_line(ValueError("y" * (LIMIT + 1)))
    assert len(cut) == LIMIT and cut.endswith("...") and cut.startswith("y" * (LIMIT - 3))
