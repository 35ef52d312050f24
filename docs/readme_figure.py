"""The README's picture: thermal | RGB | GIFNet | TIM on frames of the shared M3SVD clips.

    .venv/bin/python docs/readme_figure.py            # writes docs/fusion_example.jpg

One row per clip (its frame ``--frame``), each tile 320 pixels wide and labelled; both
networks through FusionEngine with the package's defaults (precision auto, mode thermal_rgb),
GIFNet with the authors' checkpoint (found as the demo finds it), TIM with the weights this
project trained. M3SVD is MIT-licensed, which is why these frames may be committed. TIM's
weights were trained on other frames of the same clips (frame 60 is one of the every-tenth
frames held out), so the picture says little about how it generalises: docs/fusion_quality.md
has every network on RoadScene pairs its training never saw.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2

from gifnet_ros.fusion.engine import FusionEngine
from gifnet_ros.offline.evaluate import contact_sheet, labelled_tile
from gifnet_ros.offline.sources import m3svd_pairs
from gifnet_ros.tools.demo import demo_weights

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ("0111_1716", "1230_1202")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "fusion_example.jpg")
    p.add_argument("--frame", type=int, default=60, help="frame of each clip (default 60)")
    p.add_argument("--weights", help="GIFNet checkpoint (default: as gifnet-demo finds it)")
    args = p.parse_args()
    weights, _ = demo_weights(args.weights)
    gifnet = FusionEngine(weights=weights)
    tim = FusionEngine(network="tim")
    rows = []
    for clip in CLIPS:
        thermal, rgb = m3svd_pairs(clip, 1, None, args.frame + 1)[0]
        rows.append(
            [
                labelled_tile(thermal, f"thermal (M3SVD {clip})"),
                labelled_tile(rgb, "RGB"),
                labelled_tile(gifnet.fuse(thermal, rgb), f"GIFNet, {gifnet.precision}"),
                labelled_tile(tim.fuse(thermal, rgb), f"TIM (project weights), {tim.precision}"),
            ]
        )
    sheet = cv2.cvtColor(contact_sheet(rows), cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(args.output), sheet, [cv2.IMWRITE_JPEG_QUALITY, 88]):
        raise SystemExit(f"cannot write {args.output}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
