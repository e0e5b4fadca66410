"""Score calibration: the map, its fit, and how a checkpoint carries it to the engine."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from fusion_training.score_fit import ScoredBoxes, fit_platt, held_out_scores, score_boxes

from fusion_perception.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fusion_perception.engine import FusionEngine
from fusion_perception.score_calibration import ScoreCalibration

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "models" / "demo.pt"
SHARED_DATA = Path(os.environ.get("FUSION_SHARED_DATA") or REPO.parent / "shared" / "data")


def test_calibration_is_monotone_keeps_dtype_and_inverts_its_threshold() -> None:
    calibration = ScoreCalibration(3.0, -0.5)
    raw = torch.linspace(0.0, 1.0, 101)
    mapped = calibration.apply(raw)
    assert torch.all(mapped[1:] > mapped[:-1])  # strictly monotone, also at the clamped ends
    assert calibration.apply(raw.half()).dtype == torch.float16
    assert torch.allclose(ScoreCalibration(1.0, 0.0).apply(raw[1:-1]), raw[1:-1], atol=1e-6)
    edge = calibration.raw_threshold(0.3)
    assert float(calibration.apply(torch.tensor([edge], dtype=torch.float64))) == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"slope": 0.0, "offset": 0.0}, "score_calibration.slope"),
        ({"slope": -1.0, "offset": 0.0}, "score_calibration.slope"),
        ({"slope": 1.0, "offset": float("nan")}, "score_calibration.offset"),
        ({"slope": "2", "offset": 0.0}, "score_calibration.slope"),
        ({"offset": 0.0}, "score_calibration.slope"),
        ({"slope": 1.0, "offset": 0.0, "bias": 1}, "unknown key"),
    ],
)
def test_bad_calibration_names_its_key(data, key) -> None:
    with pytest.raises(ValueError, match=key):
        ScoreCalibration.from_dict(data)


def test_fit_recovers_the_map_that_made_the_labels() -> None:
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.05, 0.95, 40000)
    truth = ScoreCalibration(2.5, -1.2)
    chance = truth.apply(torch.as_tensor(raw)).numpy()
    correct = rng.uniform(size=raw.size) < chance
    slope, offset = fit_platt(raw, correct)
    assert slope == pytest.approx(2.5, abs=0.1) and offset == pytest.approx(-1.2, abs=0.1)
    images = np.arange(raw.size) % 4
    held = held_out_scores(ScoredBoxes(raw, correct, images, objects=0, images=4))
    assert np.abs(held - chance).max() < 0.05  # each quarter fitted on the other three
    with pytest.raises(ValueError, match="correct and wrong boxes"):
        fit_platt(raw, np.ones(raw.size, dtype=bool))
    # perfectly separated data still gives a finite, monotone map (Platt's smoothed targets)
    separated = raw > 0.5
    slope, offset = fit_platt(raw, separated)
    assert np.isfinite(slope) and slope > 0
    # a fold whose other images hold no correct box is left unscored, not a crash
    lonely = np.zeros(raw.size, dtype=bool)
    lonely[images == 0] = separated[images == 0]
    held = held_out_scores(ScoredBoxes(raw, lonely, images, objects=0, images=4))
    assert np.isnan(held[images == 0]).all() and np.isfinite(held[images != 0]).all()


def test_checkpoint_carries_it_outside_the_fingerprint(tmp_path) -> None:
    checkpoint = load_checkpoint(DEMO)
    calibration = ScoreCalibration(3.0, -0.2, {"split": "val", "boxes": 10})
    path = save_checkpoint(replace(checkpoint, score_calibration=calibration), tmp_path / "c.pt")
    loaded = load_checkpoint(path)
    assert loaded.score_calibration == calibration
    assert loaded.fingerprint() == replace(checkpoint, score_calibration=None).fingerprint()
    data = torch.load(path, weights_only=True)
    data["score_calibration"]["slope"] = -3.0
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"score_calibration\.slope"):
        load_checkpoint(tmp_path / "bad.pt")
    assert data["format_version"] == 2  # readers from before the field refuse it, not drop it
    assert torch.load(DEMO, weights_only=True)["format_version"] == 2
    data["score_calibration"] = {"slope": 1.0, "offset": 0.0, "fitted_on": 3}
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"score_calibration\.fitted_on"):
        load_checkpoint(tmp_path / "bad.pt")
    plain = save_checkpoint(replace(checkpoint, score_calibration=None), tmp_path / "p.pt")
    assert torch.load(plain, weights_only=True)["format_version"] == 1


@pytest.fixture(scope="module")
def real_pair() -> tuple[np.ndarray, np.ndarray]:
    """A real RoadScene pair with people and cars (FLIR_08914)."""
    root = SHARED_DATA / "roadscene"
    if not (root / "vis").is_dir():
        pytest.skip(f"RoadScene not found under {SHARED_DATA} (set FUSION_SHARED_DATA)")
    rgb = cv2.cvtColor(cv2.imread(str(root / "vis" / "FLIR_08914.jpg")), cv2.COLOR_BGR2RGB)
    thermal = cv2.imread(str(root / "ir" / "FLIR_08914.jpg"), cv2.IMREAD_GRAYSCALE)
    return rgb, thermal.astype(np.float32) / 255.0


def test_engine_thresholds_the_calibrated_score_and_keeps_the_raw_boxes(real_pair) -> None:
    checkpoint = replace(load_checkpoint(DEMO), score_calibration=ScoreCalibration(3.5, -0.2))
    calibrated = FusionEngine(checkpoint, score_threshold=0.3, warmup=0)
    assert calibrated.score_calibration is checkpoint.score_calibration
    edge = checkpoint.score_calibration.raw_threshold(0.3)
    raw = FusionEngine(checkpoint, score_threshold=edge, warmup=0, calibrated_scores=False)
    lower = FusionEngine(checkpoint, score_threshold=0.1, warmup=0, calibrated_scores=False)
    kept, same = calibrated.infer(*real_pair).detections, raw.infer(*real_pair).detections
    assert len(kept) > 0 and len(kept) < len(lower.infer(*real_pair).detections)
    np.testing.assert_allclose(kept.boxes, same.boxes, atol=1e-4)
    expected = checkpoint.score_calibration.apply(torch.as_tensor(same.scores)).numpy()
    np.testing.assert_allclose(kept.scores, expected, atol=1e-5)
    assert kept.scores.min() >= 0.3
    with pytest.raises(ValueError, match="calibrated_scores=False"):
        score_boxes(calibrated, [])
