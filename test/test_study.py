"""The multitask / modality study on a tiny budget: every run trains, the report and plot agree."""

from __future__ import annotations

import json
import math

import pytest
from conftest import REPO
from fusion_training.study import main


def test_study_trains_every_run_and_writes_report_plot_and_json(tmp_path):
    docs, runs = tmp_path / "docs", tmp_path / "runs"
    args = ["--out", str(docs), "--workdir", str(runs), "--methods", "weighted_sum,unitygrad"]
    args += ["--config", str(REPO / "config" / "training" / "synthetic_nano.yaml")]
    args += ["--train-length", "8", "--epochs", "1", "--val-length", "4", "--night-length", "4"]
    assert main(args) == 0

    raw = json.loads((docs / "mtl_study.json").read_text())
    assert [m["label"] for m in raw["methods"]] == ["weighted_sum", "unitygrad"]
    for run in raw["methods"]:
        assert (runs / "methods" / run["label"] / "last.pt").is_file()
        assert 0.0 <= run["metrics"]["mAP50"] <= 1.0
        assert math.isfinite(run["metrics"]["fusion/SSIM"]) and run["step_ms"] > 0
    unity_log = (runs / "methods" / "unitygrad" / "train_log.csv").read_text().splitlines()
    assert len(unity_log) == 3 and "alpha/fusion" in unity_log[0]
    # Single-camera models are runs of their own; the fused model is the weighted-sum run.
    assert (runs / "modalities" / "rgb_only" / "last.pt").is_file()
    assert (runs / "modalities" / "thermal_only" / "last.pt").is_file()
    assert not (runs / "modalities" / "fused").exists()
    assert [m["label"] for m in raw["modalities"]] == [
        "fused (RGB + thermal)",
        "RGB only",
        "thermal only",
    ]
    for m in raw["modalities"]:
        assert 0.0 <= m["night_mAP50"] <= 1.0 and 0.0 <= m["day_mAP50"] <= 1.0

    text = (docs / "mtl_study.md").read_text()
    assert "![study](mtl_study.png)" in text
    ws_row = next(line for line in text.splitlines() if line.startswith("| weighted_sum |"))
    assert ws_row.endswith("| 1.00 |")
    assert "| unitygrad |" in text and "| thermal only |" in text
    gradients = text.split("### Task gradients")[1].split("## Which cameras")[0]
    assert "| unitygrad |" in gradients and "| weighted_sum |" not in gradients
    assert (docs / "mtl_study.png").stat().st_size > 10_000


def test_study_rejects_unknown_methods(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--out", str(tmp_path), "--methods", "weighted_sum,adamw"])
    assert stop.value.code == 2
    assert "--methods: unknown ['adamw']" in capsys.readouterr().err


def test_study_rejects_a_modality_method_it_does_not_train(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--out", str(tmp_path), "--methods", "unitygrad"])
    assert stop.value.code == 2
    assert "--modality-method: 'weighted_sum' is not in --methods ['unitygrad']" in (
        capsys.readouterr().err
    )
