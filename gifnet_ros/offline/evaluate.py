"""gifnet-eval: fuse every thermal/visible pair with several methods and measure the results.

    gifnet-eval DIR_IR DIR_VIS -o REPORT_DIR [--methods gifnet,tim,tim_light,average,gff]
                [--held-out] [--limit N] [--backend torch|onnxruntime] [--device auto] ...

Pairs are matched by file name (as gifnet-fuse does). Every pair is fused
with every method through the same engine contract (FusionEngine: each network
-- gifnet, tim, tim_light -- with the same engine flags, so the networks are
compared at one backend, device and precision; each classical rule as a classic_*
backend), and the metrics of :mod:`gifnet_ros.fusion.metrics` are computed on the
fused luminance against the two luminance inputs the fusion saw. REPORT_DIR receives:

- ``metrics.csv``: one row per pair and method;
- ``metrics.md``: which pairs, each network row's engine (its one-line description), and
  the mean and standard deviation of every metric per method;
- ``sheet_NNN.png``: contact sheets, one row per pair, columns
  thermal | RGB | each method, labelled, for looking at the results.

A pair that cannot be read or fused is reported with its reason and left
out; the others are still evaluated. Report files are written atomically.
Exit status: 0 all pairs evaluated, 1 some pair failed or an error, 2 bad usage.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from gifnet_ros.fusion import metrics
from gifnet_ros.fusion.engine import NETWORKS, FusionEngine
from gifnet_ros.fusion.image_files import (
    ImageFileError,
    read_image,
    write_bytes_atomic,
    write_image,
)
from gifnet_ros.fusion.options import EngineOptions
from gifnet_ros.fusion.thermal import normalize_thermal
from gifnet_ros.models.classic import METHODS as CLASSIC_METHODS

PROG = "gifnet-eval"
ALL_METHODS = (*NETWORKS, *CLASSIC_METHODS)
DEFAULT_METHODS = ("gifnet", *CLASSIC_METHODS)
NETWORK_BACKENDS = ("torch", "onnxruntime")
TILE_WIDTH = 320
ROWS_PER_SHEET = 6
LABEL_HEIGHT = 28


def parse_methods(text: str) -> list[str]:
    """The comma-separated method list, in the given order; ValueError names unknown ones."""
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown or not methods:
        raise ValueError(
            f"unknown method(s) {', '.join(unknown) or '(none given)'}: "
            f"choose from {', '.join(ALL_METHODS)}"
        )
    return list(dict.fromkeys(methods))


def read_source(path: Path) -> np.ndarray:
    """An input image as every method sees it: 16-bit or float grey (thermal) normalised once
    by the engine's default rule, which each engine would otherwise repeat; 8-bit unchanged."""
    image = read_image(path)
    return normalize_thermal(image) if image.ndim == 2 and image.dtype != np.uint8 else image


def summary_table(rows: list[dict[str, object]], methods: Sequence[str]) -> str:
    """Markdown table: one row per method, mean ± standard deviation of each metric."""
    header = "| Method | " + " | ".join(metrics.METRICS) + " |"
    lines = [header, "|---" * (len(metrics.METRICS) + 1) + "|"]
    for method in methods:
        values = [r for r in rows if r["method"] == method]
        if not values:
            continue
        cells = []
        for name in metrics.METRICS:
            column = np.array([float(r[name]) for r in values])
            cells.append(f"{np.nanmean(column):.3f} ± {np.nanstd(column):.3f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def labelled_tile(image: np.ndarray, label: str) -> np.ndarray:
    """An RGB tile TILE_WIDTH wide with `label` on a dark band above it."""
    rgb = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
    height = max(1, round(rgb.shape[0] * TILE_WIDTH / rgb.shape[1]))
    rgb = cv2.resize(rgb, (TILE_WIDTH, height), interpolation=cv2.INTER_AREA)
    band = np.full((LABEL_HEIGHT, TILE_WIDTH, 3), 32, np.uint8)
    cv2.putText(
        band,
        label,
        (6, LABEL_HEIGHT - 9),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.55,
        (255, 255, 255),
        1,
        cv2.LINE_AA,
    )
    return np.vstack([band, rgb])


def contact_sheet(rows: list[list[np.ndarray]]) -> np.ndarray:
    """Stack rows of tiles; rows of different heights are padded with black."""
    width = max(sum(t.shape[1] for t in row) for row in rows)
    stacked = []
    for row in rows:
        line = np.hstack(row)
        pad = width - line.shape[1]
        stacked.append(np.pad(line, ((0, 4), (0, pad), (0, 0))))
    return np.vstack(stacked)


def _csv_text(rows: list[dict[str, object]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["pair", "method", *metrics.METRICS])
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def with_network(methods: Sequence[str], network: str) -> list[str]:
    """``--network N``, the one-network form from before --methods took network names: the
    list's ``gifnet`` is read as N, so ``--network tim --methods gifnet,average`` (and the
    default list) still give a ``tim`` row. Another network in the list is a ValueError: the
    two flags would disagree about which networks to run."""
    renamed = list(dict.fromkeys(network if m == "gifnet" else m for m in methods))
    others = [m for m in renamed if m in NETWORKS and m != network]
    if others:
        raise ValueError(
            f"--network {network} and --methods' {', '.join(others)} name different networks: "
            "list every network in --methods and leave out --network"
        )
    return renamed


def check_network_files(methods: Sequence[str], flags: Sequence[str]) -> None:
    """ValueError when file flags that belong to one network's weights (``--weights``,
    ``--onnx-model``) meet several networks in ``methods``: a checkpoint or exported graph
    fits one network, and handing it to each would fail or mislabel rows."""
    networks = [m for m in methods if m in NETWORKS]
    if flags and len(networks) > 1:
        raise ValueError(
            f"one network's files ({', '.join(flags)}) but several networks in --methods "
            f"({', '.join(networks)}): evaluate that network in a run of its own"
        )


def build_fusers(methods: Sequence[str], options: EngineOptions) -> dict[str, FusionEngine]:
    """One engine per method, in the given order: each network with the user's engine
    options but its own network (every network row at the same backend, device and
    precision, which is what makes the rows comparable; loading its weights, WeightsError if
    absent), each classical method as its classic_* backend."""
    return {
        m: FusionEngine(replace(options, network=m))
        if m in NETWORKS
        else FusionEngine(backend=f"classic_{m}")
        for m in methods
    }


def evaluate_pairs(
    pairs: Sequence[tuple[Path, Path]],
    fusers: dict[str, FusionEngine],
    output: Path,
    source: str,
    quiet: bool = False,
) -> int:
    """Fuse every pair with every method of ``fusers`` (method name -> engine, in the report's
    order) and write the report into ``output`` (module docstring); ``source`` says in
    metrics.md which pairs these are. Returns how many pairs failed (each said on stderr and
    left out)."""
    output.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    sheet_rows: list[list[np.ndarray]] = []
    sheets = failures = 0
    for ir_path, vis_path in tqdm(pairs, desc=PROG, unit="pair", disable=quiet):
        try:
            thermal, visible = read_source(ir_path), read_source(vis_path)
            a, b = metrics.luminance(thermal), metrics.luminance(visible)
            results = {m: fuser.fuse_luminance(thermal, visible) for m, fuser in fusers.items()}
            # Inside the try: a pair too small for a metric (VIF's 41x41) is one failed pair.
            scores = {m: metrics.evaluate(fused_y, a, b) for m, (fused_y, _) in results.items()}
        except (ImageFileError, ValueError) as exc:
            tqdm.write(f"{PROG}: {ir_path.stem}: {exc}", file=sys.stderr)
            failures += 1
            continue
        tiles = [labelled_tile(thermal, f"{ir_path.stem} thermal"), labelled_tile(visible, "RGB")]
        for method, (fused_y, colour) in results.items():
            rows.append({"pair": ir_path.stem, "method": method, **scores[method]})
            tiles.append(labelled_tile(fused_y if colour is None else colour, method))
        sheet_rows.append(tiles)
        if len(sheet_rows) == ROWS_PER_SHEET:
            sheets += 1
            write_image(output / f"sheet_{sheets:03d}.png", contact_sheet(sheet_rows))
            sheet_rows = []
    if sheet_rows:
        sheets += 1
        write_image(output / f"sheet_{sheets:03d}.png", contact_sheet(sheet_rows))

    if rows:
        count = len({r["pair"] for r in rows})
        write_bytes_atomic(output / "metrics.csv", _csv_text(rows).encode())
        engines = [f"- {fuser.describe()}" for m, fuser in fusers.items() if m in NETWORKS]
        table = (
            f"Mean ± standard deviation over {count} pairs "
            f"({source}); metric definitions in gifnet_ros/fusion/metrics.py.\n\n"
            + ("Engines of the network rows:\n\n" + "\n".join(engines) + "\n\n" if engines else "")
            + summary_table(rows, list(fusers))
        )
        write_bytes_atomic(output / "metrics.md", table.encode())
    return failures
