"""fusion-init, fusion-info and fusion-infer as users run them (in-process `main`, and one real
console-script run to check the installed entry points)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO, SHARED_DATA

from fusion_perception.checkpoint import load_checkpoint
from fusion_perception.cli import infer, info, init
from fusion_perception.cli.common import run_cli

PAIRS = ("manCar", "carLight", "labMan")


@pytest.fixture(scope="module")
def vifb_subset(vifb_dir, tmp_path_factory) -> Path:
    """Three real pairs, plus one RGB image without a thermal partner."""
    root = tmp_path_factory.mktemp("vifb")
    for kind in ("vis", "ir"):
        (root / kind).mkdir()
        for name in PAIRS:
            shutil.copy(vifb_dir / kind / f"{name}.jpg", root / kind / f"{name}.jpg")
    shutil.copy(vifb_dir / "vis" / "kettle.jpg", root / "vis" / "lonely.jpg")
    return root


def test_init_writes_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "obb.pt"
    args = [str(REPO / "config/models/nano_obb.yaml"), str(out), "--classes", "car,truck,bus"]
    assert init.main([*args, "--size", "320x256"]) == 0
    checkpoint = load_checkpoint(out)
    assert checkpoint.class_names == ["car", "truck", "bus"]
    assert checkpoint.model_config.detection_head.rotated
    assert checkpoint.input_size == (320, 256)
    assert checkpoint.provenance["tool"] == "fusion-init"


def test_init_with_backbone_weights_gives_a_self_contained_checkpoint(tmp_path):
    """The weights file seeds the backbone once; the checkpoint must load after it is gone."""
    import torch

    from fusion_perception.model import load_model_config
    from fusion_perception.model.backbone import OwnBackbone

    config_path = REPO / "config/models/nano.yaml"
    torch.manual_seed(11)
    seed_backbone = OwnBackbone(load_model_config(config_path).backbone)
    weights = tmp_path / "backbone.pth"
    torch.save(seed_backbone.state_dict(), weights)
    out = tmp_path / "seeded.pt"
    args = [str(config_path), str(out), "--classes", "person", "--backbone-weights", str(weights)]
    assert init.main([*args, "--size", "320x256"]) == 0
    weights.unlink()
    checkpoint = load_checkpoint(out)
    assert checkpoint.model_config.backbone.weights is None
    assert checkpoint.provenance["backbone_initial_weights"] == str(weights)
    stored = {k.removeprefix("backbone."): v for k, v in checkpoint.state_dict.items()}
    for key, value in seed_backbone.state_dict().items():
        if key in stored:
            assert torch.equal(stored[key], value), key
    assert sum(key in stored for key in seed_backbone.state_dict()) > 10


def test_init_errors_are_one_line_and_exit_2(tmp_path, capsys):
    missing = str(tmp_path / "nope.yaml")
    assert run_cli("fusion-init", init.main, [missing, str(tmp_path / "x.pt")]) == 2
    assert "fusion-init: error:" in capsys.readouterr().err
    args = [str(REPO / "config/models/nano.yaml"), str(tmp_path / "x.pt"), "--size", "100x100"]
    assert run_cli("fusion-init", init.main, args) == 2
    assert (
        "input_size: 100x100 is not a multiple of the network stride 32" in capsys.readouterr().err
    )


def test_info_reports_parameters_flops_and_time(node_checkpoint, capsys):
    assert info.main([str(node_checkpoint), "--runs", "2"]) == 0
    text = capsys.readouterr().out
    assert "parameters" in text and "GFLOPs" in text and "forward" in text
    assert "calibrated" not in text  # node_checkpoint has no score calibration
    assert info.main([str(REPO / "models" / "demo.pt"), "--runs", "1"]) == 0
    assert "scores      calibrated: sigmoid(" in capsys.readouterr().out  # the packaged one has
    figures = info.describe(REPO / "config/models/nano.yaml", (320, 256), "cpu", 2)
    assert figures["parameters"] > 10_000 and figures["gflops"] > 0
    assert figures["forward_ms_median"] > 0


def test_info_times_another_backend(node_checkpoint, capsys):
    """--backend openvino exports the checkpoint on the fly (the session's cache) and times it."""
    assert info.main([str(node_checkpoint), "--backend", "openvino", "--runs", "2"]) == 0
    text = capsys.readouterr().out
    assert "GFLOPs" in text and "(2 runs, backend openvino on cpu" in text


def test_infer_on_real_pairs(node_checkpoint, vifb_subset, tmp_path):
    out = tmp_path / "out"
    args = ["--checkpoint", str(node_checkpoint), "--rgb", str(vifb_subset / "vis")]
    args += ["--thermal", str(vifb_subset / "ir"), "--out", str(out), "--score-threshold", "0"]
    assert infer.main([*args, "--device", "cpu"]) == 0
    for name in PAIRS:
        fused = cv2.imread(str(out / "fused" / f"{name}.png"))
        rgb = cv2.imread(str(vifb_subset / "vis" / f"{name}.jpg"))
        assert fused.shape == rgb.shape
        assert (out / "annotated" / f"{name}.png").is_file()
    assert not (out / "fused" / "lonely.png").exists()
    records = json.loads((out / "detections.json").read_text())
    assert {r["image"] for r in records} == set(PAIRS)
    for record in records:
        assert set(record) == {"image", "class_id", "class_name", "score", "bbox", "angle"}
        assert record["class_name"] == ["person", "car"][record["class_id"]]
        w, h = record["bbox"][2:]
        assert w > 0 and h > 0 and record["angle"] == 0


def test_infer_with_the_demo_model_reads_8bit_thermal_files(tmp_path):
    """The shipped model records a fixed range in 16-bit counts; an 8-bit thermal file (here a
    real RoadScene pair) is read as the model was trained on such files, divided by 255, so the
    thermal camera reaches the fused image (before: all zeros, and the visible image came out)."""
    pair = {kind: SHARED_DATA / "roadscene" / kind / "FLIR_00006.jpg" for kind in ("vis", "ir")}
    if not all(path.is_file() for path in pair.values()):
        pytest.skip(f"RoadScene pair not found: {pair['vis']} (set FUSION_SHARED_DATA)")
    args = ["--checkpoint", str(REPO / "models" / "demo.pt"), "--backend", "torch"]
    args += ["--rgb", str(pair["vis"]), "--thermal", str(pair["ir"]), "--out", str(tmp_path)]
    assert infer.main([*args, "--device", "cpu"]) == 0
    fused = cv2.imread(str(tmp_path / "fused" / "FLIR_00006.png"), cv2.IMREAD_GRAYSCALE)
    visible = cv2.cvtColor(cv2.imread(str(pair["vis"])), cv2.COLOR_BGR2GRAY).astype(float)
    thermal = cv2.imread(str(pair["ir"]), cv2.IMREAD_GRAYSCALE).astype(float)
    # the fused image follows both sources: not the visible luma with thermal blank
    assert np.corrcoef(fused.ravel(), visible.ravel())[0, 1] < 0.9
    bright = thermal > np.percentile(thermal, 95)  # warm objects are brighter than in visible
    assert fused[bright].mean() > visible[bright].mean() + 20


def test_infer_single_files_and_errors(node_checkpoint, vifb_subset, tmp_path, capsys):
    out = tmp_path / "single"
    base = ["--checkpoint", str(node_checkpoint), "--out", str(out)]
    rgb, ir = vifb_subset / "vis" / "manCar.jpg", vifb_subset / "ir" / "labMan.jpg"
    code = run_cli("fusion-infer", infer.main, [*base, "--rgb", str(rgb), "--thermal", str(ir)])
    assert code == 2
    assert "differ in size; pass --calibration" in capsys.readouterr().err
    bad = ["--rgb", str(rgb), "--thermal", str(tmp_path / "missing")]
    assert run_cli("fusion-infer", infer.main, [*base, *bad]) == 2
    assert "missing: image folder not found" in capsys.readouterr().err


def test_infer_reports_bad_pairs_processes_the_rest_and_fails_at_the_end(
    node_checkpoint, vifb_subset, tmp_path, capsys
):
    """One unreadable image and one 4096x1 line-scan pair among good pairs: the good ones are
    written, each bad one is named with its reason, and the exit status is non-zero."""
    import numpy as np

    rgb_dir, ir_dir = tmp_path / "vis", tmp_path / "ir"
    shutil.copytree(vifb_subset / "vis", rgb_dir)
    shutil.copytree(vifb_subset / "ir", ir_dir)
    broken = rgb_dir / "carLight.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    line = np.full((1, 4096, 3), 128, np.uint8)
    cv2.imwrite(str(rgb_dir / "line.png"), line)
    cv2.imwrite(str(ir_dir / "line.png"), line[:, :, 0])
    out = tmp_path / "out"
    args = ["--checkpoint", str(node_checkpoint), "--rgb", str(rgb_dir), "--thermal", str(ir_dir)]
    code = run_cli("fusion-infer", infer.main, [*args, "--out", str(out), "--device", "cpu"])
    assert code == 2
    err = capsys.readouterr().err
    assert "2 of 4 pair(s) could not be processed (the other 2 were written)" in err
    assert f"{broken} + {ir_dir / 'carLight.jpg'}: {broken}: truncated image" in err
    assert "a 4096x1 image (aspect ratio 4096:1) is too elongated for the network input" in err
    assert "Assertion failed" not in err
    written = {p.stem for p in (out / "fused").iterdir()}
    assert written == {"manCar", "labMan"}
    records = json.loads((out / "detections.json").read_text())
    assert {r["image"] for r in records} <= written


HELP_OPTIONS = {
    "fusion-init": "--classes",
    "fusion-info": "--size",
    "fusion-infer": "--checkpoint",
    "fusion-demo": "--duration",
    "fusion-train": "--resume",
    "fusion-eval": "--preset",
    "fusion-export": "--format",
    "fusion-bag2dataset": "--pseudo-labels",
    "fusion-prepare-real": "--min-score",
    "fusion-calibrate": "--iou",
}


def test_node_executables_are_installed():
    scripts = Path(sys.executable).parent
    for name in ("fusion_node", "synthetic_camera"):
        assert (scripts / name).exists(), name


@pytest.mark.parametrize("name", sorted(HELP_OPTIONS))
def test_every_console_script_answers_help(name):
    result = subprocess.run(
        [str(Path(sys.executable).parent / name), "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ") and HELP_OPTIONS[name] in result.stdout


@pytest.mark.parametrize("module", ["fusion_perception.cli.infer", "fusion_training.cli.eval"])
def test_cli_modules_run_with_python_dash_m(module):
    """`python -m ...` (as under torchrun) must run the tool, not import it and exit 0."""
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0 and result.stdout.startswith("usage: "), result.stderr
