"""The training curves of the TIM weights this project ships, from the files themselves.

    .venv/bin/python docs/tim_curves.py          # writes docs/tim_training.png

Each weights file records its loss curve (the mean training loss over each logging interval)
and its validation curve (the loss on the held-out pairs' centre crops, eval mode, at every
save); one panel per variant, both curves against the step. Nothing is re-run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # after the backend is chosen

from gifnet_ros.models.tim import VARIANTS, project_metadata

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "tim_training.png")
    args = p.parse_args()
    figure, axes = plt.subplots(1, len(VARIANTS), figsize=(11, 4))
    for axis, variant in zip(axes, VARIANTS, strict=True):
        meta = project_metadata(variant)
        for key, label, style in (
            ("loss_curve", "training loss (interval mean)", "-"),
            ("validation_curve", "validation loss (held-out crops)", "o--"),
        ):
            steps, values = zip(*meta[key], strict=True)
            axis.plot(steps, values, style, label=label)
        axis.set_title(
            f"TIM {variant}: {meta['steps']} steps, batch {meta['batch']}, "
            f"{meta['crop']}² crops, {meta['wall_seconds'] / 60:.0f} min"
        )
        axis.set_xlabel("step")
        axis.set_ylabel("loss")
        axis.set_yscale("log")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(args.output, dpi=90)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
