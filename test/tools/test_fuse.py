"""gifnet-fuse on real RoadScene crops: file and folder forms, errors, the console script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROADSCENE_CROPS, ROOT

from gifnet_ros.fusion.engine import FusionEngine
from gifnet_ros.fusion.image_files import read_image, write_image
from gifnet_ros.tools.fuse import main

pytestmark = pytest.mark.shared

NAMES = ROADSCENE_CROPS


@pytest.fixture(scope="module")
def engine(weights_path):
    """The engine with the defaults gifnet-fuse has (precision auto), on the CPU."""
    return FusionEngine(weights_path, "cpu")


def _expected(engine: FusionEngine, ir: Path, vis: Path) -> np.ndarray:
    grey = cv2.imread(str(ir), cv2.IMREAD_GRAYSCALE)
    rgb = cv2.cvtColor(cv2.imread(str(vis), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return engine.fuse(grey, rgb)


def test_one_pair(crops, engine, weights_path, tmp_path):
    ir_dir, vis_dir = crops
    out = tmp_path / "fused.png"
    args = [str(ir_dir / "FLIR_00006.png"), str(vis_dir / "FLIR_00006.png"), "-o", str(out)]
    assert main([*args, "--device", "cpu", "--weights", str(weights_path)]) == 0
    fused = cv2.cvtColor(cv2.imread(str(out), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(
        fused, _expected(engine, ir_dir / "FLIR_00006.png", vis_dir / "FLIR_00006.png")
    )


def test_folders_report_unmatched_and_bad_files(crops, engine, weights_path, tmp_path, capsys):
    ir_dir, vis_dir = crops
    (ir_dir / "only_ir.png").write_bytes((ir_dir / "FLIR_00006.png").read_bytes())
    (vis_dir / "only_vis.jpg").write_bytes((vis_dir / "FLIR_00006.png").read_bytes())
    (ir_dir / "broken.png").write_bytes(b"not an image at all")
    (vis_dir / "broken.png").write_bytes((vis_dir / "FLIR_00006.png").read_bytes())
    out = tmp_path / "out"
    code = main(
        [
            str(ir_dir),
            str(vis_dir),
            "-o",
            str(out),
            "--device",
            "cpu",
            "--weights",
            str(weights_path),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "fused 3 of 4 pairs" in err
    assert "only_ir.png: no partner" in err and "only_vis.jpg: no partner" in err
    assert "broken.png: cannot read as an image" in err
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.png" for n in NAMES)
    for name in NAMES:
        fused = read_image(out / f"{name}.png")
        assert np.array_equal(
            fused, _expected(engine, ir_dir / f"{name}.png", vis_dir / f"{name}.png")
        )


def test_size_mismatch_is_named_and_resize_fixes_it(crops, weights_path, tmp_path, capsys):
    ir_dir, vis_dir = crops
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), cv2.imread(str(ir_dir / "FLIR_00006.png"))[:32, :40])
    out = tmp_path / "fused.png"
    base = [
        str(small),
        str(vis_dir / "FLIR_00006.png"),
        "-o",
        str(out),
        "--device",
        "cpu",
        "--weights",
        str(weights_path),
    ]
    assert main(base) == 1
    err = capsys.readouterr().err.strip()
    assert "first is 40x32, second is 80x64" in err and len(err.splitlines()) == 1
    assert not out.exists()
    assert main([*base, "--resize"]) == 0
    assert read_image(out).shape == (64, 80, 3)


def test_missing_weights_is_one_line(crops, tmp_path, capsys, monkeypatch):
    ir_dir, vis_dir = crops
    monkeypatch.setenv("GIFNET_WEIGHTS", str(tmp_path / "nowhere.model"))
    code = main(
        [
            str(ir_dir / "FLIR_00006.png"),
            str(vis_dir / "FLIR_00006.png"),
            "-o",
            str(tmp_path / "x.png"),
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "nowhere.model" in err and "GIFNET_WEIGHTS" in err


def test_write_image_is_atomic(tmp_path):
    target = tmp_path / "keep.png"
    good = np.full((8, 8), 7, np.uint8)
    write_image(target, good)
    with pytest.raises(Exception):  # noqa: B017 (OpenCV raises its own error type)
        write_image(target, np.zeros((8, 8, 5), np.uint8))
    assert np.array_equal(read_image(target), good)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]


def test_console_script(crops, weights_path, tmp_path):
    ir_dir, vis_dir = crops
    out = tmp_path / "script.png"
    env = dict(os.environ, GIFNET_WEIGHTS=str(weights_path))
    script = Path(sys.executable).parent / "gifnet-fuse"
    result = subprocess.run(
        [
            str(script),
            str(ir_dir / "FLIR_00018.png"),
            str(vis_dir / "FLIR_00018.png"),
            "-o",
            str(out),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert read_image(out).shape == (64, 80, 3)


def test_classic_backend_needs_no_weights(crops, tmp_path, monkeypatch):
    """--backend classic_max with no checkpoint anywhere: the rule's property holds per pixel."""
    monkeypatch.setenv("GIFNET_WEIGHTS", str(tmp_path / "nowhere.model"))
    ir_dir, vis_dir = crops
    ir, vis = ir_dir / "FLIR_00006.png", vis_dir / "FLIR_00006.png"
    out = tmp_path / "fused.png"
    assert (
        main([str(ir), str(vis), "-o", str(out), "--backend", "classic_max", "--mode", "grey"]) == 0
    )
    fused = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    thermal = cv2.imread(str(ir), cv2.IMREAD_GRAYSCALE)
    assert fused.shape == thermal.shape
    assert (fused >= thermal).all()  # the per-pixel maximum never darkens the thermal image
    assert (fused > thermal).any()  # and the visible image shows where it is brighter


def test_speed_flags_reach_the_engine(crops, engine, weights_path, tmp_path):
    ir_dir, vis_dir = crops
    ir, vis = ir_dir / "FLIR_00006.png", vis_dir / "FLIR_00006.png"
    out = tmp_path / "fused.png"
    flags = ["--inference-scale", "0.5", "--restore", "bilinear", "--threads", "2"]
    args = [str(ir), str(vis), "-o", str(out), "--device", "cpu", "--weights", str(weights_path)]
    assert main([*args, *flags]) == 0
    fused = cv2.cvtColor(cv2.imread(str(out), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    reduced = FusionEngine(weights_path, "cpu", inference_scale=0.5, restore="bilinear", threads=2)
    np.testing.assert_array_equal(fused, _expected(reduced, ir, vis))
    assert not np.array_equal(fused, _expected(engine, ir, vis))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--backend", "classic_gff", "--device", "cuda"], "runs on the CPU"),
        (["--backend", "classic_max", "--precision", "bf16"], "fp32 only"),
        (["--inference-scale", "1.5"], "inference_scale must be in (0, 1]"),
        (["--threads", "0"], "threads must be at least 1"),
    ],
)
def test_bad_engine_flags_are_one_line(crops, weights_path, tmp_path, capsys, flags, message):
    ir_dir, vis_dir = crops
    out = tmp_path / "fused.png"
    args = [str(ir_dir / "FLIR_00006.png"), str(vis_dir / "FLIR_00006.png"), "-o", str(out)]
    assert main([*args, "--weights", str(weights_path), *flags]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_batches_give_the_images_of_single_pairs(crops, weights_path, tmp_path, capsys, data_dir):
    """--batch 2 over a folder with a pair of another size among the crops: each output is
    what one fuse() of its pair gives, in fp32 bit for bit, and the run reports its precision."""
    ir_dir, vis_dir = crops
    for kind, folder in (("ir", ir_dir), ("vis", vis_dir)):  # 2nd of 4 names, another size
        image = cv2.imread(str(data_dir / "roadscene" / kind / "FLIR_00018.jpg"))
        cv2.imwrite(str(folder / "FLIR_00010.png"), image[50:98, 60:132])
    out = tmp_path / "out"
    flags = ["--device", "cpu", "--weights", str(weights_path), "--precision", "fp32"]
    assert main([str(ir_dir), str(vis_dir), "-o", str(out), *flags, "--batch", "2"]) == 0
    err = capsys.readouterr().err
    assert "gifnet, torch (auto: an explicit precision runs in PyTorch) on cpu, fp32" in err
    engine = FusionEngine(weights_path, "cpu", "fp32")
    names = sorted(p.stem for p in ir_dir.iterdir())
    assert len(names) == 4
    for name in names:
        expected = _expected(engine, ir_dir / f"{name}.png", vis_dir / f"{name}.png")
        assert np.array_equal(read_image(out / f"{name}.png"), expected), name
