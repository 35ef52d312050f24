"""TIM with the shipped weights on RoadScene pairs its training never saw: no inverted regions.

The pairs are the ones gifnet_ros.offline.holdout keeps out of gifnet-train-tim. Each network
is run as users run it (FusionEngine with its defaults) on the whole pair. The check
(test/polarity.py): in nearly every textured window the fused image correlates positively
with the brighter source. GIFNet with the authors' checkpoint and the average of the sources
pass it, so it asks nothing a sound fusion cannot give; the image of the average with its
contrast inverted fails it, so it sees inversion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from polarity import positive_share

from gifnet_ros.fusion import metrics
from gifnet_ros.fusion.engine import FusionEngine
from gifnet_ros.offline.evaluate import read_source
from gifnet_ros.offline.holdout import held_out

pytestmark = pytest.mark.shared

MEAN_SHARE, PAIR_SHARE = 0.90, 0.75
"""Over the held-out pairs, the mean share of windows with positive correlation, and the
least any one pair may have."""

Pair = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@pytest.fixture(scope="module")
def pairs(data_dir: Path) -> dict[str, Pair]:
    """Held-out pairs by name: (thermal, RGB) as read, and their luminance (a, b)."""
    root = data_dir / "roadscene"
    found = {}
    for path in sorted((root / "ir").glob("*.jpg")):
        if held_out(path.stem):
            thermal, rgb = read_source(path), read_source(root / "vis" / path.name)
            found[path.stem] = (thermal, rgb, metrics.luminance(thermal), metrics.luminance(rgb))
    if not found:
        pytest.skip(f"no held-out RoadScene pairs under {root}")
    return found


def _shares(pairs: dict[str, Pair], fuse) -> dict[str, float]:
    return {name: positive_share(fuse(t, v, a, b), a, b) for name, (t, v, a, b) in pairs.items()}


def _assert_keeps_polarity(shares: dict[str, float]) -> None:
    worst = min(shares, key=shares.get)
    assert np.mean(list(shares.values())) >= MEAN_SHARE, shares
    assert shares[worst] >= PAIR_SHARE, (worst, shares[worst])


def test_sound_fusions_pass(pairs: dict[str, Pair], weights_path: Path) -> None:
    gifnet = FusionEngine(weights=weights_path)
    _assert_keeps_polarity(_shares(pairs, lambda t, v, a, b: gifnet.fuse_luminance(t, v)[0]))
    _assert_keeps_polarity(_shares(pairs, lambda t, v, a, b: (a + b) / 2))


def test_inverted_contrast_fails(pairs: dict[str, Pair]) -> None:
    shares = _shares(pairs, lambda t, v, a, b: 255 - (a + b) / 2)
    assert max(shares.values()) < 1 - PAIR_SHARE


@pytest.mark.parametrize("network", ["tim", "tim_light"])
def test_tim_keeps_polarity(pairs: dict[str, Pair], network: str) -> None:
    engine = FusionEngine(network=network)
    _assert_keeps_polarity(_shares(pairs, lambda t, v, a, b: engine.fuse_luminance(t, v)[0]))
