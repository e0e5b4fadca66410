"""fusion-prepare-real: registration, box mapping and the written dataset, on the real shared data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from fusion_training.cli.calibrate import main as calibrate_main
from fusion_training.cli.prepare_real import main as prepare_main
from fusion_training.datasets import PairedFolder
from fusion_training.real_pairs import (
    ENV_VAR,
    PrepareSettings,
    default_data_root,
    map_boxes,
    prepare_real_pairs,
    read_flir_boxes,
    yolo_lines,
)

from fusion_perception.checkpoint import load_checkpoint
from fusion_perception.cli.common import run_cli

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get(ENV_VAR) or REPO.parent / "shared" / "data")
FLIPPED = 2  # index (among the chosen annotated frames) whose ir/ is mirrored in the copy


# ------------------------------------------------------------------ pure helpers


def test_boxes_are_mapped_by_the_homography_clipped_and_dropped_by_reason() -> None:
    # ir = ir_full scaled by 0.5 and moved by (-10, -20) (pixel centres); image 100x80
    scale = np.array([[0.5, 0, -10.0], [0, 0.5, -20.0], [0, 0, 1]])
    centres_to_continuous = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.0]])
    homography = np.linalg.inv(centres_to_continuous) @ scale @ centres_to_continuous
    boxes = [
        ("car", 40.0, 60.0, 40.0, 20.0),  # -> (10, 10)..(30, 20), inside
        ("person", 10.0, 40.0, 20.0, 40.0),  # -> x -5..5: half outside, kept at exactly 0.5
        ("person", 0.0, 40.0, 20.0, 40.0),  # -> x -10..0: outside
        ("car", 100.0, 100.0, 6.0, 6.0),  # -> 3x3 px: tiny
        ("bike", 60.0, 60.0, 20.0, 20.0),
        ("car", 60.0, 60.0, 0.0, 20.0),
    ]
    kept, dropped = map_boxes(boxes, homography, (100, 80), PrepareSettings())
    assert [label for label, _ in kept] == [1, 0]
    np.testing.assert_allclose(kept[0][1], [10, 10, 30, 20], atol=1e-9)
    np.testing.assert_allclose(kept[1][1], [0, 0, 5, 20], atol=1e-9)
    assert dropped == {
        "less than 0.5 visible after clipping": 1,
        "smaller than 4 px": 1,
        "class bike (not written)": 1,
        "empty source box": 1,
    }
    assert yolo_lines(kept[:1], (100, 80)) == ["1 0.200000 0.187500 0.200000 0.125000"]


def test_settings_errors_name_the_flag() -> None:
    with pytest.raises(ValueError, match="--min-visible: must be in"):
        PrepareSettings(min_visible=1.5)
    with pytest.raises(ValueError, match="--val-fraction"):
        PrepareSettings(val_fraction=0.0)
    with pytest.raises(ValueError, match="--min-inliers"):
        PrepareSettings(min_inliers=2)


def test_data_root_comes_from_the_environment_else_beside_the_repository(monkeypatch) -> None:
    monkeypatch.setenv(ENV_VAR, "/somewhere/data")
    assert default_data_root() == Path("/somewhere/data")
    monkeypatch.delenv(ENV_VAR)
    assert default_data_root() == REPO.parent / "shared" / "data"


def test_cli_runs_with_python_dash_m_and_answers_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fusion_training.cli.prepare_real", "--help"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "training")},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0 and result.stdout.startswith("usage: "), result.stderr
    assert "--min-score" in result.stdout and "--data-root" in result.stdout


# ------------------------------------------------------------------ the real data


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> dict:
    """A copy of part of the shared data (links, one mirrored ir/ image), and its expectations."""
    if not (DATA / "roadscene").is_dir() or not (DATA / "tno").is_dir():
        pytest.skip(f"real RoadScene/TNO data not found under {DATA} (set ${ENV_VAR})")
    frames = read_flir_boxes(DATA / "roadscene" / "flir_boxes")
    names = sorted(p.stem for p in (DATA / "roadscene" / "ir").iterdir())
    annotated = [n for n in names if n in frames][::9][:10]  # spread over both scale groups
    unannotated = [n for n in names if n not in frames][:3]
    root = tmp_path_factory.mktemp("shared") / "data"
    road = root / "roadscene"
    for sub in ("vis", "ir", "ir_full"):
        (road / sub).mkdir(parents=True)
    for name in annotated + unannotated:
        for sub, suffix in (("vis", ".jpg"), ("ir", ".jpg"), ("ir_full", ".png")):
            (road / sub / f"{name}{suffix}").symlink_to(
                DATA / "roadscene" / sub / f"{name}{suffix}"
            )
    flipped = annotated[FLIPPED]
    (road / "ir" / f"{flipped}.jpg").unlink()
    mirror = cv2.imread(str(DATA / "roadscene" / "ir" / f"{flipped}.jpg"), cv2.IMREAD_GRAYSCALE)
    assert cv2.imwrite(str(road / "ir" / f"{flipped}.jpg"), mirror[:, ::-1])
    (road / "flir_boxes").symlink_to(DATA / "roadscene" / "flir_boxes")
    for sub in ("vis", "ir"):
        (root / "tno" / sub).mkdir(parents=True)
        for name in ("01", "02", "03"):
            (root / "tno" / sub / f"{name}.png").symlink_to(DATA / "tno" / sub / f"{name}.png")
    return {
        "root": root,
        "annotated": annotated,
        "unannotated": unannotated,
        "flipped": flipped,
        "boxes": {n: frames[n].boxes for n in annotated},
    }


@pytest.fixture(scope="module")
def prepared(source, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("prepared") / "real_pairs"
    return out, prepare_real_pairs(source["root"], out, progress=False)


def test_real_frames_register_with_high_scores_and_a_flipped_one_is_rejected(
    source, prepared
) -> None:
    out, summary = prepared
    registration = summary["registration"]
    flipped = f"roadscene_{source['flipped']}"
    assert registration["annotated_frames"] == len(source["annotated"]) == 10
    assert registration["matched"] == 9 and list(registration["rejected"]) == [flipped]
    scores = [e["score"] for s, e in summary["per_pair"].items() if s != flipped]
    assert min(scores) >= 0.99  # measured 0.9966..0.9998 on all 108 annotated frames
    # the README's same-scale crop would not have matched these frames well
    assert registration["same_scale_crop_score"]["median"] < 0.9
    assert not (out / "labels" / f"{flipped}.txt").exists()
    written = summary["boxes"]
    rejected_boxes = sum(b[0] in ("person", "car") for b in source["boxes"][source["flipped"]])
    assert written["dropped"].get("pair rejected (registration)", 0) == rejected_boxes
    assert written["kept_total"] == sum(written["kept"].values()) > 20
    assert summary["pairs"] == {
        "roadscene": 13,
        "roadscene_labelled": 9,
        "roadscene_unlabelled": 4,
        "tno_unlabelled": 3,
        "train": 15,
        "val": 1,
    }
    assert json.loads((out / "summary.json").read_text())["boxes"] == written


def test_written_dataset_loads_with_boxes_inside_the_registered_images(prepared) -> None:
    out, _ = prepared
    manifest = yaml.safe_load((out / "manifest.yaml").read_text())
    assert manifest["classes"] == ["person", "car"] and manifest["label_format"] == "yolo"
    assert manifest["unlabelled"] == "fusion_only"
    dataset = PairedFolder(out)
    stems = [r.image_id for r in dataset.records]
    assert len(stems) == 16 and all(s.startswith(("roadscene_FLIR_", "tno_")) for s in stems)
    for record in dataset.records:
        assert record.labelled == (out / "labels" / f"{record.image_id}.txt").is_file()
    labelled = [r for r in dataset.records if r.labelled]
    assert len(labelled) == 9 and sum(len(r.boxes) for r in labelled) > 20
    for record in labelled:
        width, height = record.size
        cx, cy, w, h = record.boxes[:, :4].T
        assert (cx - w / 2 >= 0).all() and (cx + w / 2 <= width + 1e-3).all()
        assert (cy - h / 2 >= 0).all() and (cy + h / 2 <= height + 1e-3).all()
        assert (np.minimum(w, h) >= 4 - 1e-3).all()
    tno = dataset[stems.index("tno_01")]
    assert not tno["labelled"] and tno["boxes"].shape == (0, 5)
    assert np.array_equal(tno["rgb"][..., 0], tno["rgb"][..., 2])
    stored = cv2.imread(str(out / "thermal" / "tno_01.png"), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == np.uint8 and stored.ndim == 2


def test_val_split_holds_only_labelled_roadscene_pairs(source, prepared) -> None:
    out, _ = prepared
    train = (out / "train.txt").read_text().split()
    val = (out / "val.txt").read_text().split()
    assert not set(train) & set(val) and len(train) + len(val) == 16
    assert all((out / "labels" / f"{s}.txt").is_file() for s in val)
    assert f"roadscene_{source['flipped']}" in train and "tno_03" in train
    assert all(item["labelled"] for item in PairedFolder(out, split="val"))


def test_figure_is_written(prepared) -> None:
    out, summary = prepared
    figure = cv2.imread(str(out / "mapped_boxes.png"))
    assert summary["figure"] == str(out / "mapped_boxes.png")
    assert figure is not None and figure.shape[0] > 300 and figure.shape[1] > 1000


def test_cli_reruns_identically_with_overwrite_and_reports_bad_input(
    source, prepared, tmp_path, capsys
) -> None:
    out, _ = prepared
    base = ["--data-root", str(source["root"]), "--out", str(out), "--no-progress"]
    assert run_cli("fusion-prepare-real", prepare_main, base) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    before = {p.name: p.read_bytes() for p in (out / "labels").iterdir()}
    split = (out / "val.txt").read_text()
    figure = tmp_path / "figure.png"
    args = [*base, "--overwrite", "--figure", str(figure)]
    assert run_cli("fusion-prepare-real", prepare_main, args) == 0
    assert "registration: 9/10" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in (out / "labels").iterdir()} == before
    assert (out / "val.txt").read_text() == split and figure.is_file()
    assert not (out / "mapped_boxes.png").exists()
    stranger = tmp_path / "stranger"
    (stranger / "keep.txt").parent.mkdir()
    (stranger / "keep.txt").write_text("not ours")
    other = ["--data-root", str(source["root"]), "--out", str(stranger), "--overwrite"]
    assert run_cli("fusion-prepare-real", prepare_main, other) == 2
    assert "refusing to empty it" in capsys.readouterr().err and (stranger / "keep.txt").exists()
    missing = ["--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]
    assert run_cli("fusion-prepare-real", prepare_main, missing) == 2
    assert "--data-root" in capsys.readouterr().err
    bad = [*base, "--overwrite", "--min-visible", "2"]
    assert run_cli("fusion-prepare-real", prepare_main, bad) == 2
    assert "--min-visible" in capsys.readouterr().err


def test_fusion_calibrate_fits_the_prepared_pairs_and_writes_a_calibrated_checkpoint(
    prepared, tmp_path, capsys
) -> None:
    """The shipped model's scores fitted on real prepared pairs (the train split here: the test
    is about the tool, not the fit's quality); the written checkpoint thresholds the calibrated
    score and keeps the network's fingerprint."""
    out, _ = prepared
    demo = REPO / "models" / "demo.pt"
    written, figure, report = tmp_path / "cal.pt", tmp_path / "cal.png", tmp_path / "cal.json"
    args = ["--checkpoint", str(demo), "--data", str(out), "--split", "train", "--out"]
    args += [str(written), "--figure", str(figure), "--report", str(report)]
    assert run_cli("fusion-calibrate", calibrate_main, args) == 0
    printed = capsys.readouterr().out
    assert "score calibration: slope" in printed and "held out, 10 folds by image" in printed
    calibrated = load_checkpoint(written)
    fit = calibrated.score_calibration
    assert fit is not None and fit.slope > 0 and fit.fitted_on["split"] == "train"
    assert 0 < fit.fitted_on["correct"] < fit.fitted_on["boxes"]
    assert calibrated.fingerprint() == load_checkpoint(demo).fingerprint()
    summary = json.loads(report.read_text())
    # calibrated scores track the share of correct boxes better than the raw ones, in sample
    assert summary["ece"]["calibrated"] < summary["ece"]["raw"]
    assert sum(row["boxes"] for row in summary["bins"]["raw"]) == fit.fitted_on["boxes"]
    assert cv2.imread(str(figure)) is not None
    refit = tmp_path / "refit.pt"  # from a calibrated input the fit starts again from raw scores
    again = ["--checkpoint", str(written), "--data", str(out), "--split", "train"]
    assert run_cli("fusion-calibrate", calibrate_main, [*again, "--out", str(refit)]) == 0
    capsys.readouterr()
    assert load_checkpoint(refit).score_calibration.slope == pytest.approx(fit.slope, rel=1e-6)
    missing = [*again[:2], "--data", str(tmp_path / "nowhere"), "--out", str(refit)]
    assert run_cli("fusion-calibrate", calibrate_main, missing) == 2
    assert "nowhere" in capsys.readouterr().err
