"""The paired-bag reader (gifnet_ros.offline.bag_reader): which pairs, in which order, read how.

Bags are written here with the package's own writer (bag_io, as gifnet-make-bag writes them),
with stamps and recording times chosen so that partners are recorded out of stamp order. The
expected pairs come from a brute-force reading of the pairing rule (every edge within the slop,
taken nearest first), not from pairing.pair_by_stamp; every image's pixels say which message it
is, so a pair read back is checked by its pixels, not by the reader's own indices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gifnet_ros.offline.bag_io import IMAGE, ToolError, image_cdr, open_writer, typestore
from gifnet_ros.offline.bag_reader import (
    BagReadError,
    CopiedMessage,
    ImagePair,
    PairedBagReader,
    stamp_text,
    topic_name,
)

THERMAL, RGB, LABEL = "/thermal/image", "/rgb/image", "/label"
START = 1_700_000_000_000_000_000
MS = 1_000_000
SLOP_S = 0.02


def header(stamp_ns: int):
    store = typestore()
    stamp = store.types["builtin_interfaces/msg/Time"](
        sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9
    )
    return store.types["std_msgs/msg/Header"](stamp=stamp, frame_id="cam")


def pixels(role: str, index: int) -> np.ndarray:
    """An image that names its message: 2x3 grey, thermal 100 + index, RGB index."""
    return np.full((2, 3), (100 if role == "thermal" else 0) + index, np.uint8)


def write_bag(
    path: Path,
    thermal: list[tuple[int, int]],
    rgb: list[tuple[int, int]],
    labels: list[int] = (),
) -> list[tuple[str, int, int]]:
    """A bag of mono8 images, (stamp, recording time) each in list order per topic, and
    std_msgs/String messages at ``labels`` recording times. Returns every message as (topic,
    index, recording time) in the order the bag stores them (recording time, then write
    order)."""
    store = typestore()
    order = []
    with open_writer(path, "mcap") as writer:
        connections = {
            THERMAL: writer.add_connection(THERMAL, IMAGE, typestore=store),
            RGB: writer.add_connection(RGB, IMAGE, typestore=store),
            LABEL: writer.add_connection(LABEL, "std_msgs/msg/String", typestore=store),
        }
        items = [(rec, THERMAL, i, stamp) for i, (stamp, rec) in enumerate(thermal)]
        items += [(rec, RGB, i, stamp) for i, (stamp, rec) in enumerate(rgb)]
        items += [(rec, LABEL, i, 0) for i, rec in enumerate(labels)]
        for recorded, topic, index, stamp in sorted(items, key=lambda item: item[0]):
            if topic == LABEL:
                msg = store.types["std_msgs/msg/String"](data=f"label {index}")
                raw = store.serialize_cdr(msg, "std_msgs/msg/String")
            else:
                role = "thermal" if topic == THERMAL else "rgb"
                raw = image_cdr(header(stamp), pixels(role, index), "mono8")
            writer.write(connections[topic], recorded, raw)
            order.append((topic, index, recorded))
    return order


def label_number(item: CopiedMessage) -> int:
    text = typestore().deserialize_cdr(item.raw, item.connection.msgtype).data
    return int(text.removeprefix("label "))


def nearest_first(thermal: list[int], rgb: list[int], slop_ns: int) -> list[tuple[int, int]]:
    """The pairing rule by brute force: all edges within the slop, taken nearest first (ties:
    earlier RGB stamp, earlier thermal stamp, lower indices), each message once; (thermal
    index, RGB index) sorted by RGB index."""
    edges = sorted(
        (abs(t - r), r, t, i, j)
        for i, r in enumerate(rgb)
        for j, t in enumerate(thermal)
        if abs(t - r) <= slop_ns
    )
    used_rgb, used_thermal, pairs = set(), set(), []
    for *_, i, j in edges:
        if i not in used_rgb and j not in used_thermal:
            used_rgb.add(i)
            used_thermal.add(j)
            pairs.append((j, i))
    return sorted(pairs, key=lambda pair: pair[1])


@pytest.fixture
def streams() -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Thermal at 10 Hz stamped 3 ms late and recorded 250 ms after its stamp (so its RGB
    partners are read first), one thermal frame dropped and one sent twice; RGB at 10 Hz with
    jitter, recorded 5 ms after its stamp, one frame far from any thermal one."""
    rgb_stamps = [START + k * 100 * MS + (k % 3) * MS for k in range(10)]
    rgb_stamps[6] += 45 * MS  # no thermal frame within the slop
    thermal_stamps = [START + k * 100 * MS + 3 * MS for k in range(10) if k != 4]
    thermal_stamps.insert(7, thermal_stamps[6])  # a repeated stamp: only one may pair
    thermal = [(stamp, stamp + 250 * MS) for stamp in thermal_stamps]
    rgb = [(stamp, stamp + 5 * MS) for stamp in rgb_stamps]
    return thermal, rgb


def test_pairs_match_the_rule_and_come_when_their_second_message_is_read(tmp_path, streams):
    thermal, rgb = streams
    labels = [START + k * 70 * MS for k in range(15)]
    stored = write_bag(tmp_path / "bag", thermal, rgb, labels)
    expected = nearest_first([s for s, _ in thermal], [s for s, _ in rgb], round(SLOP_S * 1e9))
    assert 0 < len(expected) < len(rgb)  # the bag has unpaired messages on both sides

    with PairedBagReader(tmp_path / "bag", THERMAL, RGB) as reader:
        reader.scan()
        assert reader.thermal.stamps == [s for s, _ in thermal]
        assert reader.rgb.recorded == [r for _, r in rgb]
        pairing = reader.pair(SLOP_S)
        assert list(pairing.pairs) == expected
        label = [c for c in reader.connections if c.topic == LABEL]
        items = list(reader.read_pairs(copies=label))

    # Recording order, independently: a pair appears where its later message is stored, a
    # copy where it is stored, the copy before a pair completed by the same message.
    position = {(topic, index): n for n, (topic, index, _) in enumerate(stored)}
    events = [(position[(LABEL, n)], 0, ("copy", n)) for n in range(len(labels))]
    for seq, (t, r) in enumerate(expected):
        events.append((max(position[(RGB, r)], position[(THERMAL, t)]), 1, ("pair", seq)))
    assert [
        ("copy", label_number(item)) if isinstance(item, CopiedMessage) else ("pair", item.seq)
        for item in items
    ] == [event for *_, event in sorted(events)]

    pairs = [item for item in items if isinstance(item, ImagePair)]
    for pair in pairs:
        t, r = expected[pair.seq]
        _, thermal_pixels = pair.thermal.decode("bag")
        _, rgb_pixels = pair.rgb.decode("bag")
        assert np.array_equal(thermal_pixels, pixels("thermal", t))
        assert np.array_equal(rgb_pixels, pixels("rgb", r))
        assert (pair.thermal.stamp_ns, pair.thermal.recorded_ns) == thermal[t]
        assert (pair.rgb.stamp_ns, pair.rgb.recorded_ns) == rgb[r]
    # Thermal is recorded 250 ms late: RGB partners of about 2.5 frames wait, never the bag.
    assert 2 <= reader.peak_waiting <= 4


def test_thermal_offset_and_selected_pairs(tmp_path, streams):
    thermal, rgb = streams
    write_bag(tmp_path / "bag", thermal, rgb)
    offset_s = -0.1  # thermal one frame late: pairs thermal k+1 stamps with RGB k
    shifted = [s + round(offset_s * 1e9) for s, _ in thermal]
    expected = nearest_first(shifted, [s for s, _ in rgb], round(SLOP_S * 1e9))
    with PairedBagReader(tmp_path / "bag", "thermal/image", "rgb/image") as reader:
        assert (reader.thermal.topic, reader.rgb.topic) == (THERMAL, RGB)
        assert list(reader.pair(SLOP_S, offset_s).pairs) == expected
        chosen = {0, len(expected) - 1}
        pairs = list(reader.read_pairs(selected=chosen))
    assert sorted(pair.seq for pair in pairs) == sorted(chosen)
    for pair in pairs:
        t, r = expected[pair.seq]
        assert np.array_equal(pair.rgb.decode("bag")[1], pixels("rgb", r))
        assert np.array_equal(pair.thermal.decode("bag")[1], pixels("thermal", t))
        assert pair.thermal.stamp_ns == thermal[t][0]  # its own stamp, not the shifted one


def test_first_pass_reads_stamps_without_decoding(tmp_path, streams, monkeypatch):
    """Pass 1 and the pairing touch no pixels: with deserialization made to fail, the stamps
    and pairs are still there; decoding a pair's image then fails in one line."""
    thermal, rgb = streams
    write_bag(tmp_path / "bag", thermal, rgb)

    def refuse(*_args, **_kwargs):
        raise AssertionError("pixels\ndecoded")

    monkeypatch.setattr(typestore(), "deserialize_cdr", refuse)
    with PairedBagReader(tmp_path / "bag", THERMAL, RGB) as reader:
        pairing = reader.pair(SLOP_S)
        assert reader.rgb.stamps == [s for s, _ in rgb]
        assert len(pairing.pairs) > 0
        pair = next(item for item in reader.read_pairs() if isinstance(item, ImagePair))
    with pytest.raises(BagReadError) as caught:
        pair.thermal.decode("some.mcap")
    text = str(caught.value)
    assert text.startswith(f"some.mcap: {THERMAL} message {pair.thermal.index} (stamp ")
    assert "is corrupt: pixels decoded" in text and "\n" not in text


def one_line_error(path: Path, thermal_topic: str = THERMAL, rgb_topic: str = RGB) -> str:
    with (
        pytest.raises(BagReadError) as caught,
        PairedBagReader(path, thermal_topic, rgb_topic) as r,
    ):
        r.pair(SLOP_S)
        list(r.read_pairs())
    text = str(caught.value)
    assert isinstance(caught.value, ToolError)  # the tools print it without a traceback
    assert "\n" not in text and text.startswith(str(path)), text
    return text


def test_one_line_errors(tmp_path, streams):
    thermal, rgb = streams
    bag = tmp_path / "bag"
    write_bag(bag, thermal, rgb, [START])
    missing = one_line_error(bag, thermal_topic="/ir")
    assert "no thermal topic '/ir'" in missing
    assert f"{RGB} (sensor_msgs/msg/Image)" in missing and f"{LABEL} (std_msgs" in missing
    assert "has type std_msgs/msg/String" in one_line_error(bag, rgb_topic=LABEL)
    assert "no such file" in one_line_error(tmp_path / "nothing")
    garbage = tmp_path / "noise.mcap"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    assert "cannot open bag" in one_line_error(garbage)
    storage = bag / "bag.mcap"
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(storage.read_bytes()[: storage.stat().st_size // 2])
    assert "cannot open bag" in one_line_error(cut)


def test_a_bag_changed_between_the_passes_is_an_error(tmp_path, streams):
    thermal, rgb = streams
    write_bag(tmp_path / "bag", thermal, rgb)
    with PairedBagReader(tmp_path / "bag", THERMAL, RGB) as reader:
        reader.pair(SLOP_S)
        reader.rgb.stamps[3] += 1  # what pass 2 reads is no longer what pass 1 read
        with pytest.raises(BagReadError, match="message 3 differs between the first and"):
            list(reader.read_pairs())
        reader.rgb.stamps[3] -= 1
        reader.rgb.stamps.append(0)
        reader.rgb.recorded.append(0)
        with pytest.raises(BagReadError, match=f"{RGB} had 11 messages in the first pass and 10"):
            list(reader.images(reader.rgb))


def test_helpers():
    assert stamp_text(12 * 10**9 + 5) == "12.000000005"
    assert topic_name("rgb/image") == topic_name("/rgb/image") == "/rgb/image"
