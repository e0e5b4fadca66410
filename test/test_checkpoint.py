"""The checkpoint format: round trip, and each corruption names its field."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO

from fusion_perception.checkpoint import (
    CheckpointError,
    load_checkpoint,
    new_checkpoint,
    save_checkpoint,
)
from fusion_perception.model import build_model, load_model_config


@pytest.fixture(scope="module")
def nano():
    config = load_model_config(REPO / "config" / "models" / "nano.yaml").with_overrides(
        {"detection_head.num_classes": 2}
    )
    torch.manual_seed(0)
    model = build_model(config)
    checkpoint = new_checkpoint(
        model,
        config,
        ["person", "car"],
        (128, 96),
        {"scheme": "fixed_range", "params": {"lo": 7000, "hi": 9000}},
        provenance={"dataset": "synthetic", "metrics": {"mAP50": 0.5}},
    )
    return model, checkpoint


def test_round_trip_keeps_every_field(nano, tmp_path):
    model, checkpoint = nano
    path = save_checkpoint(checkpoint, tmp_path / "model.pt")
    loaded = load_checkpoint(path)
    assert loaded.class_names == ["person", "car"]
    assert loaded.input_size == (128, 96)
    assert loaded.model_config == checkpoint.model_config
    assert loaded.thermal_normalization["scheme"] == "fixed_range"
    assert loaded.thermal_normalization["params"]["lo"] == 7000
    assert loaded.provenance["metrics"] == {"mAP50": 0.5}
    assert "created" in loaded.provenance
    rebuilt = loaded.build_model()
    rgb, thermal = torch.rand(1, 3, 96, 128), torch.rand(1, 1, 96, 128)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(rgb, thermal)["fused"], model(rgb, thermal)["fused"])
    assert not list(tmp_path.glob("*.partial"))


def corrupt(checkpoint, tmp_path, change) -> str:
    data = checkpoint.to_dict()
    change(data)
    path = tmp_path / "bad.pt"
    torch.save(data, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    return str(info.value)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d.pop("state_dict"), "state_dict: missing"),
        (lambda d: d.pop("class_names"), "class_names: missing"),
        (lambda d: d.pop("input_size"), "input_size: missing"),
        (lambda d: d.pop("thermal_normalization"), "thermal_normalization: missing"),
        (lambda d: d.pop("provenance"), "provenance: missing"),
        (lambda d: d.update(format="something.else"), "format: expected"),
        (lambda d: d.update(format_version=99), "format_version: 99 is newer"),
        (lambda d: d.update(format_version=0), "format_version: must be >= 1, found 0"),
        (lambda d: d.update(format_version="1"), "format_version: expected int, found str"),
        (lambda d: d.pop("format_version"), "format_version: missing"),
        (lambda d: d.pop("model_config"), "model_config: missing from checkpoint"),
        (lambda d: d.update(class_names=["person"]), "class_names: 1 names"),
        (lambda d: d.update(class_names=["person", ""]), "class_names: expected non-empty"),
        (lambda d: d.update(input_size=[130, 96]), "input_size: 130x96 is not a multiple"),
        (lambda d: d.update(input_size="128x96"), "input_size: expected"),
        (
            lambda d: d.update(thermal_normalization={"scheme": "magic", "params": {}}),
            "thermal_normalization:",
        ),
        (
            lambda d: d["model_config"]["detection_head"].update(channels=-1),
            "model_config:",
        ),
        (lambda d: d["model_config"].update(colour="blue"), "model_config:"),
        (lambda d: d["state_dict"].pop(next(iter(d["state_dict"]))), "state_dict: does not fit"),
        (
            lambda d: d["state_dict"].update(extra=torch.zeros(1)),
            "state_dict: does not fit",
        ),
        (
            lambda d: d["state_dict"].update(
                {k: torch.zeros(3) for k in list(d["state_dict"])[:1]}
            ),
            "has shape (3,)",
        ),
    ],
)
def test_each_corruption_names_its_field(nano, tmp_path, change, field):
    assert field in corrupt(nano[1], tmp_path, change)


def test_not_a_checkpoint_and_truncated_files(nano, tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(missing)
    text = tmp_path / "text.pt"
    text.write_text("hello\nworld\n")
    with pytest.raises(CheckpointError, match=r"is a text file \(starts with 'hello'\)"):
        load_checkpoint(text)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"is empty \(0 bytes\)"):
        load_checkpoint(empty)
    binary = tmp_path / "image.pt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        load_checkpoint(binary)
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint file"):
        load_checkpoint(run)
    save_checkpoint(nano[1], run / "best.pt")
    with pytest.raises(CheckpointError, match=r"directory.*it holds best\.pt"):
        load_checkpoint(run)
    good = save_checkpoint(nano[1], tmp_path / "good.pt")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(cut)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(nano, tmp_path, bad):
    data = nano[1].to_dict()
    key = next(k for k, v in data["state_dict"].items() if v.is_floating_point() and v.numel() > 3)
    data["state_dict"][key] = data["state_dict"][key].clone()
    data["state_dict"][key].view(-1)[:3] = bad
    path = tmp_path / "diverged.pt"
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="non-finite") as info:
        load_checkpoint(path)
    assert f"{key} (3 of {data['state_dict'][key].numel()})" in str(info.value)
    assert str(info.value).startswith("state_dict:")


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "fusion_perception.checkpoint", "payload": object()}, path)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)
