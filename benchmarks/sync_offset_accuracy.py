"""Accuracy of gifnet-sync-offset on bags of the shared M3SVD clips with known shifts (a table).

    .venv/bin/python benchmarks/sync_offset_accuracy.py                     # both clips, 160x120
    .venv/bin/python benchmarks/sync_offset_accuracy.py --frames 100 --bag-size 64x48

For each clip and each shift (-0.5 to +0.5 s in 0.1 s steps) a bag is built with
gifnet-make-bag in a temporary directory: thermal stamps = RGB stamps of the same scene + shift,
both jittered (2 ms by default). The tool's estimator reads it as the command does; the right
answer is -shift (sync.thermal_offset is added to thermal stamps), and the error is given in
frame periods of the clip. A shift the estimator refuses shows its one-line reason.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from gifnet_ros.offline import sync_offset
from gifnet_ros.offline.bag_io import ToolError
from gifnet_ros.offline.sources import find_shared
from gifnet_ros.tools import make_bag

ROOT = Path(__file__).resolve().parents[1]
SHARED = find_shared() or ROOT.parent / "shared"  # $GIFNET_SHARED first, as the demo
CLIPS = {"0111_1716": 30.0, "1230_1202": 22.0}  # frames per second
SHIFTS = [round(-0.5 + 0.1 * i, 1) for i in range(11)]


def estimate(
    clip: str, shift: float, args: argparse.Namespace, tmp: Path
) -> sync_offset.OffsetEstimate:
    """The estimator's answer for one clip and shift (a SyncOffsetError or ToolError when it
    refuses)."""
    bag = tmp / f"{clip}_{shift:+.1f}"
    data = SHARED / "data" / "m3svd"
    build = [
        str(bag), "--thermal", str(data / "infrared" / f"{clip}.mp4"),
        "--rgb", str(data / "visible" / f"{clip}.mp4"), "--rate", str(CLIPS[clip]),
        "--resize", args.bag_size, "--thermal-offset-ms", str(shift * 1000),
        "--jitter-ms", str(args.jitter_ms),
    ]  # fmt: skip
    if args.frames:
        build += ["--max-frames", str(args.frames)]
    assert make_bag.main(build) == 0
    thermal, rgb = sync_offset.bag_signals(
        bag, make_bag.THERMAL_TOPIC, make_bag.RGB_TOPIC, sync_offset.DEFAULT_SIZE
    )
    return sync_offset.correlate(thermal, rgb)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bag-size", default="160x120", help="WxH of the bags (default %(default)s)")
    p.add_argument("--frames", type=int, help="frames per bag (default: the whole clip)")
    p.add_argument("--jitter-ms", type=float, default=2.0, help="stamp jitter (default 2)")
    args = p.parse_args()
    print(
        f"{'clip':>9} {'shift s':>8} {'estimate s':>11} {'error frames':>13} "
        f"{'period ms':>10} {'peak':>5} {'margin':>7} {'frames':>7}"
    )
    worst = {}
    with tempfile.TemporaryDirectory() as tmp:
        for clip, rate in CLIPS.items():
            for shift in SHIFTS:
                try:
                    result = estimate(clip, shift, args, Path(tmp))
                except ToolError as exc:
                    print(f"{clip:>9} {shift:>+8.1f}  refused: {exc}", flush=True)
                    worst[clip] = float("inf")
                    continue
                error = (result.offset + shift) * rate
                worst[clip] = max(worst.get(clip, 0.0), abs(error))
                print(
                    f"{clip:>9} {shift:>+8.1f} {result.offset:>+11.4f} {error:>+13.2f} "
                    f"{1000 / rate:>10.1f} {result.peak:>5.2f} {result.margin:>7.2f} "
                    f"{result.rgb_frames:>7}",
                    flush=True,
                )
    print(
        f"bags {args.bag_size}, jitter {args.jitter_ms:g} ms, analysis size "
        f"{sync_offset.DEFAULT_SIZE[0]}x{sync_offset.DEFAULT_SIZE[1]}; largest error in frames: "
        + ", ".join(f"{clip} {value:.2f}" for clip, value in worst.items())
    )


if __name__ == "__main__":
    main()
