"""gifnet-train-tim: a few real steps on tiny crops of a shared M3SVD clip, the loss against
independent computations, the metadata, repeatability and bad arguments."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from gifnet_ros.fusion import metrics
from gifnet_ros.models.tim import load_tim
from gifnet_ros.models.weights import WeightsError
from gifnet_ros.offline.train_tim import LossWeights, fusion_loss, ssim_pair_tensor
from gifnet_ros.tools.train_tim import main

pytestmark = pytest.mark.shared

CLIP = "0111_1716"


@pytest.fixture(scope="module")
def m3svd() -> Path:
    from conftest import DATA

    path = DATA / "m3svd"
    if not (path / "infrared" / f"{CLIP}.mp4").is_file():
        pytest.skip(f"M3SVD clip {CLIP} not found under {path}")
    return path


def _run(m3svd: Path, out: Path, *extra: str) -> int:
    return main(
        [
            str(out),
            "--m3svd",
            str(m3svd),
            "--clips",
            CLIP,
            "--steps",
            "8",
            "--batch",
            "2",
            "--crop",
            "32",
            "--val-crop",
            "32",
            "--holdout-every",
            "30",
            "--warmup",
            "2",
            "--log-every",
            "4",
            "--save-every",
            "4",
            "--no-progress",
            "--no-roadscene",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def trained(m3svd: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "tim.pt"
    assert _run(m3svd, out) == 0
    return out


def test_loss_decreases_and_metadata_recorded(trained: Path, m3svd: Path) -> None:
    record = torch.load(trained, weights_only=True)
    meta = record["metadata"]
    assert meta["validation_loss_after"] < meta["validation_loss_before"]
    assert meta["complete"] and meta["steps_done"] == meta["steps"] == 8
    assert meta["seed"] == 0 and meta["batch"] == 2 and meta["crop"] == 32
    assert meta["loss_weights"] == {
        "gradient": 5.0,
        "ssim": 2.0,
        "stage1": 0.5,
        "distill": 0.0,
        "intensity_max": 0.5,
    }
    assert meta["roadscene"] is None
    assert "max(ir,vis)" in meta["loss"]
    assert [step for step, _ in meta["loss_curve"]] == [4, 8]
    assert [step for step, _ in meta["validation_curve"]] == [0, 4, 8]
    assert meta["validation_curve"][-1][1] == meta["validation_loss_after"]
    assert meta["final_loss"] == meta["loss_curve"][-1][1]
    (clip,) = meta["data"]
    thermal = m3svd / "infrared" / f"{CLIP}.mp4"
    assert clip["infrared_sha256"] == hashlib.sha256(thermal.read_bytes()).hexdigest()
    assert clip["frames"] == meta["train_frames"] + meta["holdout_frames"] == 151
    assert meta["holdout_frames"] == 6  # frames 0, 30, ..., 150
    assert meta["command"].startswith("gifnet-train-tim ") and "--steps 8" in meta["command"]
    assert "not the TIM authors' weights" in meta["what"]


def test_output_loads_as_tim(trained: Path) -> None:
    model = load_tim("ivif", trained)
    ir, vis = torch.rand(1, 1, 20, 24), torch.rand(1, 1, 20, 24)
    with torch.no_grad():
        assert torch.isfinite(model(ir, vis)).all()


def test_same_seed_same_weights(trained: Path, m3svd: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.pt"
    assert _run(m3svd, again) == 0
    first = torch.load(trained, weights_only=True)["state_dict"]
    second = torch.load(again, weights_only=True)["state_dict"]
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_ssim_matches_the_metrics_module() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 1, 40, 36, generator=g)
    y = (0.6 * x + 0.4 * torch.rand(1, 1, 40, 36, generator=g)).clamp(0, 1)
    expected = metrics.ssim_pair(x[0, 0].numpy() * 255.0, y[0, 0].numpy() * 255.0)
    assert ssim_pair_tensor(x, y).item() == pytest.approx(expected, abs=1e-5)


def test_loss_terms_vanish_where_they_should() -> None:
    """A fused image equal to the intensity target (half the brighter source, half the mean)
    has no intensity loss; one equal to both sources (identical sources) no loss at all."""
    g = torch.Generator().manual_seed(2)
    ir, vis = torch.rand(2, 1, 24, 24, generator=g), torch.rand(2, 1, 24, 24, generator=g)
    target = 0.5 * torch.maximum(ir, vis) + 0.25 * (ir + vis)
    _, terms = fusion_loss(target, ir, vis, LossWeights())
    assert terms["intensity"] == pytest.approx(0, abs=1e-7)
    _, terms = fusion_loss(torch.maximum(ir, vis), ir, vis, LossWeights(intensity_max=1.0))
    assert terms["intensity"] == 0
    total, terms = fusion_loss(ir, ir, ir, LossWeights())
    assert total.item() == pytest.approx(0, abs=1e-6)
    assert terms["gradient"] == 0


def _smooth_field(seed: int) -> torch.Tensor:
    """A 1×1×48×48 image in [0.2, 0.8] with structure at several scales."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 1, 6, 6, generator=g)
    fine = torch.rand(1, 1, 48, 48, generator=g)
    field = torch.nn.functional.interpolate(coarse, size=(48, 48), mode="bilinear") + 0.2 * fine
    field = (field - field.min()) / (field.max() - field.min())
    return 0.2 + 0.6 * field


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_no_term_rewards_inverted_contrast(seed: int) -> None:
    """Every term of the loss is signed: the average of the sources with its contrast
    inverted about its mean (same mean, same gradient magnitudes) pays more in each term than
    the average itself, and more than the average in total by a wide margin."""
    ir, vis = _smooth_field(seed), _smooth_field(seed + 100)
    fused = (ir + vis) / 2
    inverted = 2 * fused.mean() - fused
    for share in (0.0, 0.5, 1.0):
        weights = LossWeights(intensity_max=share)
        good_total, good = fusion_loss(fused, ir, vis, weights)
        bad_total, bad = fusion_loss(inverted, ir, vis, weights)
        for term in ("intensity", "gradient", "ssim"):
            assert bad[term] > good[term], (share, term)
        assert bad_total.item() > 1.5 * good_total.item()


def test_bad_arguments(m3svd: Path, tmp_path: Path, capsys) -> None:
    assert _run(m3svd, tmp_path / "a.pt", "--crop", "30") == 2
    assert "--crop must be a multiple of 4" in capsys.readouterr().err
    assert main([str(tmp_path / "b.pt"), "--m3svd", str(tmp_path / "none")]) == 1
    assert "no such file or directory" in capsys.readouterr().err
    assert not (tmp_path / "a.pt").exists() and not (tmp_path / "b.pt").exists()
    assert np.all([not p.name.endswith(".part") for p in tmp_path.iterdir()])


def test_distillation_from_gifnet(m3svd: Path, weights_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "distilled.pt"
    assert _run(m3svd, out, "--distill", "0.5", "--gifnet-weights", str(weights_path)) == 0
    meta = torch.load(out, weights_only=True)["metadata"]
    assert meta["loss_weights"]["distill"] == 0.5
    assert meta["validation_loss_after"] < meta["validation_loss_before"]


def test_light_variant(m3svd: Path, tmp_path: Path) -> None:
    out = tmp_path / "light.pt"
    assert _run(m3svd, out, "--variant", "light") == 0
    meta = torch.load(out, weights_only=True)["metadata"]
    assert meta["validation_loss_after"] < meta["validation_loss_before"]
    assert meta["loss_weights"]["stage1"] == 0.0  # no stage 2, so no separate stage-1 term
    assert meta["what"].startswith("TIM light weights")
    assert load_tim("light", out).model_2 is None
    with pytest.raises(WeightsError, match="holds TIM 'light' weights, not 'ivif'"):
        load_tim("ivif", out)


def test_thread_count_restored(trained: Path, m3svd: Path, tmp_path: Path) -> None:
    """--threads applies to the run only: a caller's own setting survives main()."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert _run(m3svd, tmp_path / "t.pt", "--steps", "1", "--log-every", "1") == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_roadscene_held_out_pairs_are_never_drawn() -> None:
    """The RoadScene pairs whose name's SHA-256 leaves 0 or 1 mod 5 (computed here on their
    own) are in the validation set only; the drawing chances give each source half."""
    from conftest import DATA

    from gifnet_ros.offline.train_tim import build_frames, m3svd_frames, roadscene_frames

    root = DATA / "roadscene"
    if not (root / "ir").is_dir():
        pytest.skip(f"RoadScene pairs not found under {root}")
    pairs, record = roadscene_frames(root)
    names = sorted(p.name for p in (root / "ir").iterdir())
    expected = [
        n for n in names if int(hashlib.sha256(Path(n).stem.encode()).hexdigest(), 16) % 5 < 2
    ]
    assert record["held_out"] == expected and len(expected) == 20
    assert record["train"] == [n for n in names if n not in expected]
    clips, _ = m3svd_frames(DATA / "m3svd", [CLIP], 30)
    frames = build_frames([clips, pairs])
    assert set(frames.train).isdisjoint(frames.holdout)
    assert len(frames.holdout) == 6 + 20 and len(frames.train) == 145 + 37
    assert frames.chance.sum() == pytest.approx(1.0)
    video_share = frames.chance[frames.train < len(clips)].sum()
    assert video_share == pytest.approx(0.5)
    # Pairs are stored clips first, then RoadScene in name order.
    assert sorted(names[k - len(clips)] for k in frames.holdout if k >= len(clips)) == expected
