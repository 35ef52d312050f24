"""gifnet-eval on small RoadScene crops: report files, table contents and bad input."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from gifnet_ros.fusion import metrics
from gifnet_ros.fusion.image_files import read_image
from gifnet_ros.tools.eval import main

pytestmark = pytest.mark.shared

CLASSIC = ["average", "max", "laplacian", "gff"]


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_classic_methods_report(crops: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "report"
    status = main(
        [str(crops[0]), str(crops[1]), "-o", str(out), "--methods", ",".join(CLASSIC), "--quiet"]
    )
    assert status == 0
    rows = read_rows(out / "metrics.csv")
    assert [(r["pair"], r["method"]) for r in rows[:4]] == [(rows[0]["pair"], m) for m in CLASSIC]
    assert len(rows) == 3 * len(CLASSIC)
    assert set(rows[0]) == {"pair", "method", *metrics.METRICS}

    # The max rule's row holds the metrics of max(thermal, Y) computed here directly (the
    # engine floors Y in float32, so a few grey levels may differ by one: hence rel=1e-2).
    name = rows[0]["pair"]
    thermal = read_image(crops[0] / f"{name}.png").astype(np.float64)
    visible_y = metrics.luminance(read_image(crops[1] / f"{name}.png"))
    fused = np.maximum(thermal, np.floor(visible_y))
    expected = metrics.evaluate(fused, thermal, visible_y)
    row = next(r for r in rows if r["pair"] == name and r["method"] == "max")
    for metric in ("EN", "SD", "SF", "AG", "Qabf"):
        assert float(row[metric]) == pytest.approx(expected[metric], rel=1e-2)

    # The Markdown table: mean ± population SD of each CSV column.
    table = (out / "metrics.md").read_text()
    for method in CLASSIC:
        line = next(t for t in table.splitlines() if t.startswith(f"| {method} |"))
        values = np.array([float(r["SSIM"]) for r in rows if r["method"] == method])
        ssim_cell = line.split("|")[2 + metrics.METRICS.index("SSIM")].strip()
        assert ssim_cell == f"{values.mean():.3f} ± {values.std():.3f}"

    sheet = read_image(out / "sheet_001.png")
    assert sheet.shape[1] == (2 + len(CLASSIC)) * 320
    assert not (out / "sheet_002.png").exists()


def test_gifnet_is_evaluated_through_the_engine(
    crops: tuple[Path, Path], tmp_path: Path, weights_path: Path
) -> None:
    out = tmp_path / "report"
    status = main(
        [
            str(crops[0]),
            str(crops[1]),
            "-o",
            str(out),
            "--methods",
            "gifnet,max",
            "--limit",
            "1",
            "--device",
            "cpu",
            "--weights",
            str(weights_path),
            "--quiet",
        ]
    )
    assert status == 0
    rows = read_rows(out / "metrics.csv")
    assert [r["method"] for r in rows] == ["gifnet", "max"]
    assert "| gifnet |" in (out / "metrics.md").read_text()


def test_another_network_is_named_in_the_report(crops: tuple[Path, Path], tmp_path: Path) -> None:
    """--network tim_light: the network method's rows, table line and precision line carry
    TIM's name, not GIFNet's, and its fusion is the tim_light engine's."""
    from gifnet_ros.fusion.engine import FusionEngine

    out = tmp_path / "report"
    args = [str(crops[0]), str(crops[1]), "-o", str(out), "--methods", "gifnet,max"]
    args += ["--limit", "1", "--network", "tim_light", "--precision", "fp32", "--quiet"]
    assert main(args) == 0
    rows = read_rows(out / "metrics.csv")
    assert [r["method"] for r in rows] == ["tim_light", "max"]
    table = (out / "metrics.md").read_text()
    assert "| tim_light |" in table and "\n- tim_light, torch (auto: " in table
    assert "on cpu, fp32 (requested)" in table
    name = rows[0]["pair"]
    thermal, visible = (read_image(folder / f"{name}.png") for folder in crops)
    fused, _ = FusionEngine(network="tim_light", device="cpu", precision="fp32").fuse_luminance(
        thermal, visible
    )
    expected = metrics.evaluate(fused, metrics.luminance(thermal), metrics.luminance(visible))
    assert float(rows[0]["SD"]) == pytest.approx(expected["SD"], rel=1e-6)


def test_several_networks_and_a_rule_in_one_report(
    crops: tuple[Path, Path],
    tmp_path: Path,
    weights_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One command, rows for gifnet, tim, tim_light and max: each network row holds the
    metrics of that network's own engine built here with the same flags, metrics.md names
    every network row's engine and has every metric for every method."""
    from gifnet_ros.fusion.engine import FusionEngine

    monkeypatch.setenv("GIFNET_WEIGHTS", str(weights_path))  # GIFNet's default checkpoint
    methods = ["tim_light", "max", "gifnet", "tim"]  # any mix and order
    out = tmp_path / "report"
    args = [str(crops[0]), str(crops[1]), "-o", str(out), "--methods", ",".join(methods)]
    args += ["--limit", "1", "--device", "cpu", "--precision", "fp32", "--quiet"]
    assert main(args) == 0
    rows = read_rows(out / "metrics.csv")
    assert [r["method"] for r in rows] == methods
    table = (out / "metrics.md").read_text()

    name = rows[0]["pair"]
    thermal, visible = (read_image(folder / f"{name}.png") for folder in crops)
    a, b = metrics.luminance(thermal), metrics.luminance(visible)
    for row in rows[:1] + rows[2:]:
        engine = FusionEngine(network=row["method"], device="cpu", precision="fp32")
        expected = metrics.evaluate(engine.fuse_luminance(thermal, visible)[0], a, b)
        for metric in metrics.METRICS:
            assert float(row[metric]) == pytest.approx(expected[metric], abs=1e-6), metric
        assert f"\n- {engine.describe()}\n" in table
    assert len({r["SD"] for r in rows}) == len(methods)  # four different fusions

    lines = table.splitlines()
    assert lines[lines.index("| Method | " + " | ".join(metrics.METRICS) + " |") + 2 :] == [
        f"| {r['method']} | "
        + " | ".join(f"{float(r[m]):.3f} ± 0.000" for m in metrics.METRICS)
        + " |"
        for r in rows
    ]
    assert read_image(out / "sheet_001.png").shape[1] == (2 + len(methods)) * 320


def write_pairs(ir: Path, vis: Path, names: list[str], shape: tuple[int, int] = (48, 48)) -> None:
    """Random thermal/RGB pairs of ``shape`` (H, W) with the given names, as PNGs: 48x48 is
    the smallest round size every metric takes (VIF needs 41x41)."""
    rng = np.random.default_rng(0)
    ir.mkdir(exist_ok=True)
    vis.mkdir(exist_ok=True)
    for name in names:
        cv2.imwrite(str(ir / f"{name}.png"), rng.integers(0, 256, shape, np.uint8))
        cv2.imwrite(str(vis / f"{name}.png"), rng.integers(0, 256, (*shape, 3), np.uint8))


def is_held_out(name: str) -> bool:
    """TIM's hold-out rule, restated here: sha256 of the name, as an integer, mod 5 below 2."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest(), "big") % 5 < 2


def test_held_out_evaluates_exactly_the_held_out_pairs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = [f"pair_{i:02d}" for i in range(12)]
    held = sorted(n for n in names if is_held_out(n))
    assert 0 < len(held) < len(names)  # the folders test both sides of the rule
    ir, vis = tmp_path / "ir", tmp_path / "vis"
    write_pairs(ir, vis, names)
    out = tmp_path / "report"
    args = [str(ir), str(vis), "--methods", "average", "--quiet", "--held-out"]
    assert main([*args, "-o", str(out)]) == 0
    assert [r["pair"] for r in read_rows(out / "metrics.csv")] == held
    text = (out / "metrics.md").read_text()
    assert f"over {len(held)} pairs (" in text
    assert "only the pairs TIM's training holds out (gifnet_ros.offline.holdout): " in text
    assert f": {len(held)} of {len(names)});" in text

    # --limit counts held-out pairs.
    assert main([*args, "-o", str(tmp_path / "first"), "--limit", "1"]) == 0
    assert [r["pair"] for r in read_rows(tmp_path / "first" / "metrics.csv")] == held[:1]

    # Folders without a held-out pair: one line, exit 1, no report.
    ir2, vis2 = tmp_path / "ir2", tmp_path / "vis2"
    kept = [n for n in names if not is_held_out(n)]
    write_pairs(ir2, vis2, kept)
    capsys.readouterr()
    none = tmp_path / "none"
    assert main([str(ir2), str(vis2), "-o", str(none), "--methods", "average", "--held-out"]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"gifnet-eval: none of the {len(kept)} pairs in {ir2} and {vis2} is held out of "
        "TIM's training (gifnet_ros.offline.holdout)\n"
    )
    assert not none.exists()


def test_unreadable_pair_is_reported_and_the_rest_evaluated(
    crops: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ir, vis = crops
    (ir / "broken.png").write_bytes(b"not an image")
    (vis / "broken.png").write_bytes(b"not an image")
    (ir / "lonely.png").write_bytes(b"")
    write_pairs(ir, vis, ["tiny"], (24, 32))  # fuses, but below VIF's 41x41
    out = tmp_path / "report"
    status = main([str(ir), str(vis), "-o", str(out), "--methods", "average", "--quiet"])
    assert status == 1
    err = capsys.readouterr().err
    assert "broken.png: cannot read as an image" in err
    assert "lonely.png: no partner" in err
    assert "tiny: VIF needs images of at least 41x41 pixels, got 32x24" in err
    assert len(read_rows(out / "metrics.csv")) == 3


def test_bad_usage(
    crops: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ir, vis = crops
    out = tmp_path / "report"
    assert main([str(ir), str(vis), "-o", str(out), "--methods", "average,median"]) == 2
    assert "unknown method(s) median" in capsys.readouterr().err
    assert main([str(ir), str(tmp_path / "missing"), "-o", str(out)]) == 2
    assert "missing: not a directory" in capsys.readouterr().err

    # One network's files with several networks, and --network against --methods: one line.
    base = [str(ir), str(vis), "-o", str(out)]
    weights = ["--weights", str(tmp_path / "x.model"), "--methods", "gifnet,tim,average"]
    assert main([*base, *weights]) == 2
    assert capsys.readouterr().err == (
        "gifnet-eval: one network's files (--weights) but several networks in --methods "
        "(gifnet, tim): evaluate that network in a run of its own\n"
    )
    assert main([*base, "--onnx-model", "x.onnx", "--methods", "tim,tim_light"]) == 2
    assert "one network's files (--onnx-model) but" in capsys.readouterr().err
    assert main([*base, "--network", "tim", "--methods", "gifnet,tim_light"]) == 2
    assert capsys.readouterr().err == (
        "gifnet-eval: --network tim and --methods' tim_light name different networks: list "
        "every network in --methods and leave out --network\n"
    )
    assert not out.exists()


def test_sixteen_bit_thermal_is_evaluated_as_its_normalised_frame(
    crops: tuple[Path, Path], tmp_path: Path
) -> None:
    """Radiometric 16-bit thermal PNGs: the metrics, and the contact sheet, are those of the
    same folders with the thermal frames normalised to 8 bits by the default rule beforehand."""
    from gifnet_ros.fusion.thermal import normalize_thermal

    ir16, ir8 = tmp_path / "ir16", tmp_path / "ir8"
    ir16.mkdir()
    ir8.mkdir()
    for path in crops[0].iterdir():
        counts = read_image(path).astype(np.uint16) * 37 + 7000
        cv2.imwrite(str(ir16 / path.name), counts)
        cv2.imwrite(str(ir8 / path.name), normalize_thermal(counts))
    reports = {}
    for name, folder in (("16", ir16), ("8", ir8)):
        out = tmp_path / f"report{name}"
        args = [str(folder), str(crops[1]), "-o", str(out), "--methods", "average,max", "--quiet"]
        assert main(args) == 0
        reports[name] = (read_rows(out / "metrics.csv"), read_image(out / "sheet_001.png"))
    assert reports["16"][0] == reports["8"][0]
    np.testing.assert_array_equal(reports["16"][1], reports["8"][1])
