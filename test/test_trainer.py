"""End-to-end trainer: real tiny runs on synthetic scenes, exact resume, every MTL method, DDP."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

# test the working tree's training/ package, not a copy installed into the venv
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

from fusion_training.cli.train import entry_point
from fusion_training.config import TrainingConfigError, load_training_config
from fusion_training.datasets import build_dataset, collate
from fusion_training.engine import NonFiniteLossError, train_one_epoch
from fusion_training.losses import UniFusODLoss
from fusion_training.mtl import METHODS, build_method
from fusion_training.run_log import write_mtl_summary
from fusion_training.run_state import portable_path
from fusion_training.trainer import ExcludeObjectless, Trainer, batch_has_objects

from fusion_perception.checkpoint import load_checkpoint
from fusion_perception.engine import FusionEngine
from fusion_perception.model import build_model
from fusion_perception.synthetic import SceneGenerator

REPO = Path(__file__).resolve().parents[1]
NANO = REPO / "config" / "training" / "synthetic_nano.yaml"
# 64x64 scenes, 8 training images in batches of 2 (4 steps per epoch), cheap augmentation;
# UnityGrad measuring every step, so the tests see the multitask machinery at work
SMALL = {
    "mtl.method": "unitygrad",
    "mtl.update_every": 1,
    "mtl.options": {"eig_floor": 0.01},
    "input_size": [64, 64],
    "dataset.train.length": 8,
    "dataset.val": None,
    "batch_size": 2,
    "augment.options": {"rgb_pad": 0, "hue": 0.0, "saturation": 0.0},
    "progress": False,
}


def _config(out: Path, **overrides):
    return load_training_config(NANO, {**SMALL, "output_dir": str(out), **overrides})


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def test_tiny_run_learns_and_its_checkpoint_runs_in_the_engine(tmp_path):
    # one fixed batch without augmentation: the losses must go down
    config = _config(
        tmp_path / "run",
        **{
            "dataset.train.length": 2,
            "dataset.val": {"length": 2, "seed": 7},
            "augment.enabled": False,
            "epochs": 8,
            "eval.every": 4,
            "eval.fusion_images": 2,
        },
    )
    result = Trainer(config).fit()
    assert result.step == 8 and result.epoch == 8
    rows = _rows(tmp_path / "run" / "train_log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    for term in ("total", "fusion", "detection"):  # UnityGrad improves both tasks
        values = [float(r[f"loss/{term}"]) for r in rows]
        assert all(math.isfinite(v) for v in values)
        assert np.mean(values[-2:]) < np.mean(values[:2]), (term, values)
    for column in ("alpha/fusion", "alpha/detection", "grad_norm/fusion", "grad_norm/detection"):
        assert all(float(r[column]) > 0 for r in rows), column
    assert all(-1 <= float(r["cos/fusion-detection"]) <= 1 for r in rows)
    # the premise diagnostics, every step (UnityGrad measures every step in this recipe)
    assert all(-1 <= float(r["ema_cos/fusion-detection"]) <= 1 for r in rows)
    for column in ("grad_ratio/fusion", "grad_ratio/detection", "grad_norm_shared"):
        assert all(float(r[column]) > 0 for r in rows), column
    assert all(0 < float(r["clip_factor"]) <= 1 for r in rows)
    summary = json.loads((tmp_path / "run" / "mtl_summary.json").read_text())
    assert summary["method"] == "unitygrad" and summary["steps"] == 8
    assert (summary["clip_norm"], summary["clip_mode"]) == (1.0, "shared")
    assert summary["measurements"] == 8
    assert summary["premise_conflicting_gradients"] in (True, False)
    assert summary["ema_cosine"]["fusion-detection"]["count"] >= 1
    assert [float(r["lr"]) for r in rows] == [1e-3] * 8
    assert len(_rows(tmp_path / "run" / "eval_log.csv")) == 2  # after epochs 4 and 8
    assert any((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))

    checkpoint = load_checkpoint(result.last_checkpoint)
    assert checkpoint.class_names == ["person", "car"]
    assert checkpoint.input_size == (64, 64)
    assert checkpoint.thermal_normalization["scheme"] == "fixed_range"
    assert checkpoint.thermal_normalization["params"]["hi"] == 12000.0
    assert checkpoint.provenance["step"] == 8
    # The whole config, with the model YAML as a path relative to the working directory.
    portable_model = portable_path(config.model)
    assert checkpoint.provenance["config"] == {**config.to_dict(), "model": portable_model}
    assert not Path(portable_model).is_absolute() or Path.cwd() not in Path(config.model).parents
    assert set(checkpoint.provenance["metrics"]) >= {"mAP50", "loss/total", "fusion/SSIM"}
    assert load_checkpoint(result.best_checkpoint).provenance["metrics"]["mAP50"] == (
        result.best_value
    )
    scene = SceneGenerator(100, 80, classes=("person", "car"), seed=3).sample(0)
    engine = FusionEngine(checkpoint, device="cpu", score_threshold=0.0, warmup=0)
    thermal = (scene.thermal_raw.astype(np.float32) - 5000) / 7000
    out = engine.infer(scene.rgb, thermal.clip(0, 1))
    assert out.fused_luma.shape == (80, 100) and out.fused_luma.dtype == np.uint8
    assert len(out.detections) > 0 and np.isfinite(out.detections.boxes).all()


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    overrides = {"epochs": 3, "mtl.update_every": 2, "scheduler.step_size": 1}
    Trainer(_config(tmp_path / "straight", max_steps=6, **overrides)).fit()
    # stop in the middle of the first epoch (step 3 of 4), then resume across an epoch boundary
    Trainer(_config(tmp_path / "split", max_steps=3, **overrides)).fit()
    state = torch.load(tmp_path / "split" / "last_state.pt", weights_only=False)
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (3, 0, 3)
    result = Trainer(_config(tmp_path / "split", max_steps=6, **overrides)).fit(resume=True)
    assert result.step == 6

    a = load_checkpoint(tmp_path / "straight" / "last.pt").state_dict
    b = load_checkpoint(tmp_path / "split" / "last.pt").state_dict
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    straight = torch.load(tmp_path / "straight" / "last_state.pt", weights_only=False)
    resumed = torch.load(tmp_path / "split" / "last_state.pt", weights_only=False)
    assert straight["scheduler"] == resumed["scheduler"]
    assert straight["scheduler"]["last_epoch"] == 1  # one finished epoch, lr decayed once
    steps = [s["step"] for s in resumed["optimizer"]["state"].values()]
    assert {float(s) for s in steps} == {6.0}
    assert resumed["method"]["state"]["_measured_step"] == ("value", 4)
    rows_a = _rows(tmp_path / "straight" / "train_log.csv")
    rows_b = _rows(tmp_path / "split" / "train_log.csv")
    assert [r["step"] for r in rows_b] == [str(i) for i in range(1, 7)]
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert float(ra["loss/total"]) == pytest.approx(float(rb["loss/total"]), rel=1e-5)
        assert ra["lr"] == rb["lr"]


def test_init_weights_starts_from_a_checkpoint_with_a_fresh_optimizer(tmp_path):
    Trainer(_config(tmp_path / "base", max_steps=2, seed=5)).fit()  # other initial weights
    base = load_checkpoint(tmp_path / "base" / "last.pt")
    config = _config(tmp_path / "tuned", max_steps=1, init_weights=str(tmp_path / "base/last.pt"))
    Trainer(config).fit()
    tuned = load_checkpoint(tmp_path / "tuned" / "last.pt")
    assert tuned.provenance["config"]["init_weights"] == str(tmp_path / "base" / "last.pt")
    state = torch.load(tmp_path / "tuned" / "last_state.pt", weights_only=False)
    assert {float(s["step"]) for s in state["optimizer"]["state"].values()} == {1.0}
    # one step from the base weights stays close to them; the seed's own initialisation does not
    Trainer(_config(tmp_path / "fresh", max_steps=1)).fit()
    fresh = load_checkpoint(tmp_path / "fresh" / "last.pt")
    keys = [k for k, v in base.state_dict.items() if v.is_floating_point()]

    def distance(checkpoint) -> float:
        return sum((checkpoint.state_dict[k] - base.state_dict[k]).abs().sum().item() for k in keys)

    to_base, fresh_to_base = distance(tuned), distance(fresh)
    assert to_base < 0.5 * fresh_to_base


def test_init_weights_refuses_another_network_or_other_classes(tmp_path):
    Trainer(_config(tmp_path / "base", max_steps=1)).fit()
    ckpt = str(tmp_path / "base" / "last.pt")
    with pytest.raises(ValueError, match=r"init_weights: .* detects \['person', 'car'\]"):
        Trainer(_config(tmp_path / "a", max_steps=1, init_weights=ckpt, classes=["car"])).fit()
    other = {"init_weights": ckpt, "model_overrides": {"fusion_head.channels": 16}}
    with pytest.raises(ValueError, match=r"init_weights: .* another network"):
        Trainer(_config(tmp_path / "b", max_steps=1, **other)).fit()
    with pytest.raises(ValueError, match=r"init_weights: file: .* does not exist"):
        Trainer(_config(tmp_path / "c", max_steps=1, init_weights=str(tmp_path / "no.pt"))).fit()


@pytest.fixture(scope="module")
def tiny_batches():
    data = build_dataset("synthetic", length=4, width=64, height=64, seed=5, max_objects=3)
    items = [data[i] for i in range(4)]
    return [collate(items[:2]), collate(items[2:])]


@pytest.fixture(scope="module")
def nano_config(tmp_path_factory):
    return _config(tmp_path_factory.mktemp("methods")).model_config()


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_multitask_method_trains(name, tiny_batches, nano_config):
    torch.manual_seed(0)
    model = build_model(nano_config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    method = build_method(name, ("fusion", "detection"))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    logs = []
    step = train_one_epoch(
        model,
        UniFusODLoss(),
        method,
        optimizer,
        tiny_batches,
        torch.device("cpu"),
        epoch=0,
        step=0,
        grad_clip=1.0,
        on_step=logs.append,
    )
    assert step == 2 and [entry.step for entry in logs] == [1, 2]
    for entry in logs:
        assert all(math.isfinite(v) for v in entry.losses.values())
        assert set(entry.report.alpha) == {"fusion", "detection"}
        assert math.isfinite(entry.grad_norm)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("backbone.") for k in changed)
    assert any(k.startswith("fusion_head.") for k in changed)
    assert any(k.startswith("detection_head.") for k in changed)


def test_a_non_finite_loss_stops_training_and_prints_the_loss_dict(tiny_batches, nano_config):
    model = build_model(nano_config)
    bad = dict(tiny_batches[0])
    bad["thermal"] = bad["thermal"].clone()
    bad["thermal"][0, 0, 10, 10] = float("nan")
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    with pytest.raises(
        NonFiniteLossError, match=r"Loss is nan, stopping training at step 0"
    ) as err:
        train_one_epoch(
            model,
            UniFusODLoss(),
            build_method("unitygrad", ("fusion", "detection")),
            torch.optim.Adam(model.parameters()),
            [bad],
            torch.device("cpu"),
            epoch=0,
            step=0,
        )
    for term in ("'ssim'", "'gradient'", "'classification'", "'bbox_regression'", "'total'"):
        assert term in str(err.value)
    assert all(torch.equal(p, before[k]) for k, p in model.named_parameters())  # no step taken


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"optimizer.lrr": 1e-3}, "optimizer.lrr"),
        ({"optimizer": {"lr": -1.0}}, "optimizer.lr"),
        ({"loss": {"focal": -2.0}}, "loss.focal"),
        ({"mtl.options": {"eig_flor": 0.1}}, "mtl.options.eig_flor"),
        ({"augment.options": {"hue": 2.0}}, "augment.options.hue"),
        ({"dataset.options": {"lenght": 3}}, "dataset.options.lenght"),
        ({"batch_size": "four"}, "batch_size"),
        ({"input_size": [100, 64]}, "input_size"),
        ({"eval.best_metric": "AP50"}, "eval.best_metric"),
        ({"mtl.clip": "heads"}, "mtl.clip"),
        ({"mtl.method": "gradnorm", "mtl.options": {"layer": 3}}, "mtl.options"),
        ({"mtl.method": "gradnorm", "mtl.options": {"layer_params": []}}, "mtl.options"),
        ({"mtl.options": {"ema_beta": 1.0}}, "mtl.options"),
    ],
)
def test_bad_config_values_are_named(tmp_path, overrides, key):
    with pytest.raises(TrainingConfigError, match=key.replace(".", r"\.")):
        load_training_config(NANO, {"output_dir": str(tmp_path), **overrides})


def test_unknown_yaml_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(NANO.read_text().replace("grad_clip:", "grad_clipp:"), encoding="utf-8")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "nano.yaml").write_text(
        (REPO / "config" / "models" / "nano.yaml").read_text(), encoding="utf-8"
    )
    path.write_text(path.read_text().replace("../models/", "models/"), encoding="utf-8")
    with pytest.raises(TrainingConfigError, match="unknown config key 'grad_clipp'"):
        load_training_config(path)


def test_cli_reports_user_errors_with_exit_code_2(tmp_path, capsys):
    args = ["--config", str(NANO), "--out", str(tmp_path / "out")]
    assert entry_point([*args, "--set", "scheduler.gama=0.1"]) == 2
    assert "fusion-train: error:" in capsys.readouterr().err
    missing = tmp_path / "no_such_dataset"
    dataset = json.dumps({"format": "m3fd", "root": "unused"})
    m3fd = [*args, "--set", f"dataset={dataset}", "--set", "classes=null", "--data", str(missing)]
    assert entry_point(m3fd) == 2
    err = capsys.readouterr().err
    assert "fusion-train: error:" in err and str(missing) in err
    assert entry_point(["--config", str(tmp_path / "missing.yaml")]) == 2


def test_cli_trains_saves_the_resolved_config_and_resumes(tmp_path):
    out = tmp_path / "cli"
    sets = [f"{k}={json.dumps(v)}" for k, v in SMALL.items()]
    args = ["--config", str(NANO), "--out", str(out), "--device", "cpu"]
    args += [a for s in sets for a in ("--set", s)]
    assert entry_point([*args, "--max-steps", "1"]) == 0
    saved = load_training_config(out / "config.yaml")
    assert saved.max_steps == 1 and saved.input_size == (64, 64) and saved.device == "cpu"
    assert saved.model == str((REPO / "config" / "models" / "nano.yaml").resolve())
    assert entry_point([*args, "--max-steps", "2", "--resume"]) == 0
    assert load_checkpoint(out / "last.pt").provenance["step"] == 2
    assert load_training_config(out / "config.yaml").max_steps == 2
    assert [r["step"] for r in _rows(out / "train_log.csv")] == ["1", "2"]
    assert entry_point(["--config", str(NANO), "--out", str(tmp_path / "empty"), "--resume"]) == 2
    assert entry_point([*args, "--max-steps", "3"]) == 2  # would overwrite the run: refused


def test_gpu_recipe_has_the_papers_defaults():
    config = load_training_config(REPO / "config" / "training" / "m3fd_small.yaml")
    assert (config.optimizer.name, config.optimizer.lr) == ("adam", 1e-4)
    assert (config.scheduler.name, config.scheduler.step_size) == ("step", 10)
    assert config.mtl.method == "unitygrad" and config.amp and config.amp_dtype == "bfloat16"
    weights = config.loss_weights()
    assert weights.detection_weight == 0.4
    assert (weights.ssim, weights.gradient, weights.box, weights.focal) == (1.0, 1.0, 1.0, 1.0)
    assert config.model_config().detection_head.num_classes == 6


_DDP_SCRIPT = """
import json, sys
from pathlib import Path
import torch
from fusion_training.config import load_training_config
from fusion_training.trainer import Trainer

config = load_training_config(sys.argv[1], json.loads(sys.argv[2]))
trainer = Trainer(config)
result = trainer.fit()
state = {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}
torch.save({"state": state, "step": result.step}, Path(sys.argv[3]) / f"rank{trainer.rank}.pt")
"""


@pytest.mark.slow
def test_two_process_ddp_ends_with_identical_weights_on_both_ranks(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(_DDP_SCRIPT, encoding="utf-8")
    out = tmp_path / "run"
    overrides = {**SMALL, "output_dir": str(out), "max_steps": 3, "epochs": 2, "device": "cpu"}
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO / "training"), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--standalone", str(script), str(NANO), json.dumps(overrides), str(tmp_path)]
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=85)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["step"] == ranks[1]["step"] == 3
    assert ranks[0]["state"].keys() == ranks[1]["state"].keys()
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), key
    checkpoint = load_checkpoint(out / "last.pt")
    assert checkpoint.provenance["world_size"] == 2 and checkpoint.provenance["step"] == 3
    torch.manual_seed(0)  # the trainer's initialisation with seed 0: training moved the weights
    initial = build_model(checkpoint.model_config).state_dict()
    assert not torch.equal(
        initial["backbone.stem.0.weight"], ranks[0]["state"]["backbone.stem.0.weight"]
    )


def test_provenance_paths_are_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    inside = tmp_path / "models" / "nano.yaml"
    assert portable_path(str(inside)) == "models/nano.yaml"
    assert portable_path("/elsewhere/nano.yaml") == "/elsewhere/nano.yaml"


def test_the_trainer_hands_clipping_and_gradnorm_layer_to_the_method(tmp_path, nano_config):
    model = build_model(nano_config)
    config = _config(
        tmp_path, **{"mtl.method": "gradnorm", "mtl.options": {"layer": "fra"}, "grad_clip": 2.0}
    )
    method = Trainer(config)._method(model)
    fra = {id(p) for p in model.fra.parameters()}
    assert method.layer_params and {id(p) for p in method.layer_params} == fra
    assert (method.clip_norm, method.clip_mode) == (2.0, "shared")
    each = _config(tmp_path, **{"mtl.clip": "each", "grad_clip": None})
    method = Trainer(each)._method(model)
    assert (method.clip_norm, method.clip_mode) == (None, "each")
    bad = _config(tmp_path, **{"mtl.method": "gradnorm", "mtl.options": {"layer": "decoder"}})
    with pytest.raises(ValueError, match=r"mtl\.options: layer \['decoder'\] matches no"):
        Trainer(bad)._method(model)


def _target(boxes: int, labelled: bool = True) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.zeros(boxes, 5),
        "labels": torch.zeros(boxes, dtype=torch.int64),
        "labelled": torch.tensor(labelled),
    }


def test_a_batch_has_objects_only_with_a_box_in_a_labelled_image():
    assert batch_has_objects([_target(0), _target(2)])
    assert not batch_has_objects([_target(0), _target(0)])
    assert not batch_has_objects([_target(3, labelled=False), _target(0)])
    assert batch_has_objects([{"boxes": torch.zeros(1, 5), "labels": torch.zeros(1)}])


def test_an_objectless_batch_is_left_out_of_the_solve_and_alpha_is_not_reused(
    tiny_batches, nano_config
):
    torch.manual_seed(0)
    model = build_model(nano_config)
    empty = dict(tiny_batches[1])
    # annotated but empty, and unlabelled: neither carries a positive detection target
    empty["targets"] = [
        {**empty["targets"][0], "boxes": torch.zeros(0, 5), "labels": torch.zeros(0).long()},
        {**empty["targets"][1], "labelled": torch.tensor(False)},
    ]
    method = build_method("unitygrad", ("fusion", "detection"), update_every=5)
    method.set_clip(1.0)
    criterion = ExcludeObjectless(UniFusODLoss())
    assert criterion.weights.detection_weight == 0.4  # the wrapped loss's attributes
    logs = []
    train_one_epoch(
        model,
        criterion,
        method,
        torch.optim.Adam(model.parameters(), lr=1e-3),
        [tiny_batches[0], empty, tiny_batches[0], tiny_batches[0]],
        torch.device("cpu"),
        epoch=0,
        step=0,
        on_step=logs.append,
    )
    first, objectless, after, reuse = (entry.report for entry in logs)
    assert first.recomputed and first.excluded == ()
    assert objectless.recomputed and objectless.partial
    assert objectless.excluded == ("detection",) and objectless.alpha["detection"] == 0.0
    assert math.isfinite(logs[1].losses["detection"])  # still computed and logged
    assert after.recomputed and not after.partial and after.alpha["detection"] > 0
    assert not reuse.recomputed and reuse.alpha == after.alpha
    assert all(0 < entry.report.clip_factor <= 1 for entry in logs)
    assert method.summary()["excluded_steps"]["detection"] == 1


def test_the_summary_is_written_and_a_missing_premise_is_logged_once(tmp_path, caplog):
    method = build_method("unitygrad", ("fusion", "detection"))
    g = torch.tensor([[1.0, 0.2, 0.0], [0.8, 0.0, 0.5]])  # cos > 0 on every measurement
    for _ in range(3):
        cos = method.monitor.update_ema({0: g[0], 1: g[1]})
        method.monitor.record_measurement(cos, cos, np.ones(2), np.ones(2), partial=False)
        method.monitor.record_step(0.5, 2.0, ())
    with caplog.at_level("INFO", logger="fusion_training.trainer"):
        summary = write_mtl_summary(method, tmp_path)
    assert json.loads((tmp_path / "mtl_summary.json").read_text()) == summary
    assert summary["premise_conflicting_gradients"] is False
    assert summary["clip_factor"]["mean"] == 0.5 and summary["clipped_fraction"] == 1.0
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "Nash's premise (conflicting gradients) does not hold" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()
