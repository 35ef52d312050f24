"""Shared test fixtures: where ../shared is, and skips when it is not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GIFNET_SHARED", ROOT.parent / "shared"))
WEIGHTS = SHARED / "gifnet" / "weights" / "Final.model"
REFERENCE = SHARED / "gifnet" / "reference"
DATA = SHARED / "data"
REFERENCE_CASES = sorted(p.name[: -len("_y.npy")] for p in REFERENCE.glob("*_y.npy"))


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
    """The reference FusionEngine (CPU, default settings) that outputs are compared with.

    Shared by the whole session; a test module that changes an engine's
    settings defines its own.
    """
    from gifnet_ros.engine import FusionEngine

    return FusionEngine(weights=weights_path, device="cpu")
