"""Shared test fixtures: where ../shared is, and skips when it is not."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GIFNET_SHARED", ROOT.parent / "shared"))
WEIGHTS = SHARED / "gifnet" / "weights" / "Final.model"
REFERENCE = SHARED / "gifnet" / "reference"
DATA = SHARED / "data"
REFERENCE_CASES = sorted(p.name[: -len("_y.npy")] for p in REFERENCE.glob("*_y.npy"))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two 8-bit images in dB (inf when they are equal)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """A tool run in-process with --threads sets PyTorch's thread count for the whole process
    (as PyTorch has it); later tests compare with nodes in other processes at the default
    count, where another count can move a float rounding across a grey level."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def weights_path() -> Path:
    """The authors' checkpoint, read from ../shared (never copied into the project)."""
    if not WEIGHTS.is_file():
        pytest.skip(f"checkpoint not found at {WEIGHTS}")
    return WEIGHTS


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared RoadScene / M3SVD data."""
    if not DATA.is_dir():
        pytest.skip(f"shared data not found at {DATA}")
    return DATA


@pytest.fixture(scope="session")
def engine(weights_path):
    """The reference FusionEngine (CPU, fp32: the exact mode, otherwise default settings) that
    outputs are compared with.

    Shared by the whole session; a test module that changes an engine's
    settings defines its own.
    """
    from gifnet_ros.fusion.engine import FusionEngine

    return FusionEngine(weights=weights_path, device="cpu", precision="fp32")


ROADSCENE_CROPS = ("FLIR_00006", "FLIR_00018", "FLIR_00060")


@pytest.fixture
def crops(tmp_path: Path, data_dir: Path) -> tuple[Path, Path]:
    """80×64 crops of three RoadScene pairs as PNGs in tmp_path/ir and tmp_path/vis (files
    made for the test only), for the tools that read image folders."""
    import cv2

    ir_dir, vis_dir = tmp_path / "ir", tmp_path / "vis"
    for name in ROADSCENE_CROPS:
        for kind, folder in (("ir", ir_dir), ("vis", vis_dir)):
            folder.mkdir(exist_ok=True)
            image = cv2.imread(
                str(data_dir / "roadscene" / kind / f"{name}.jpg"), cv2.IMREAD_UNCHANGED
            )
            cv2.imwrite(str(folder / f"{name}.png"), image[100:164, 200:280])
    return ir_dir, vis_dir
