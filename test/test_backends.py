"""Inference backends: the shipped model exported to ONNX and OpenVINO gives the engine's eager
results under ONNX Runtime and OpenVINO; an artifact of another checkpoint, altered weights and a
missing runtime are refused with errors naming the problem; on-the-fly exports are cached."""

from __future__ import annotations

import dataclasses
import json
import re
import sys

import numpy as np
import onnx
import pytest
import torch
from conftest import REPO
from fusion_training.cli.export import main as export_main
from onnx import numpy_helper

from fusion_perception import export as exporting
from fusion_perception.backends import (
    ArtifactMismatchError,
    BackendError,
    BackendUnavailableError,
    ExportMismatchError,
    check_inputs,
    frame_tensors,
    installed,
    require_runtime,
    resolve_backend,
)
from fusion_perception.checkpoint import load_checkpoint
from fusion_perception.cli import info
from fusion_perception.engine import Detections, FusionEngine
from fusion_perception.synthetic import SceneGenerator

DEMO = REPO / "models" / "demo.pt"  # lite0, 320x256, trained: real detections to compare
CPU = torch.device("cpu")
RUNTIMES = {"onnxruntime": "onnx", "openvino": "openvino"}
needs_tensorrt = pytest.mark.skipif(
    not (torch.cuda.is_available() and installed("tensorrt")),
    reason="TensorRT needs CUDA and the tensorrt wheel",
)


@pytest.fixture(scope="module")
def demo():
    return load_checkpoint(DEMO)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """fusion-export of the shipped model to ONNX and OpenVINO IR, as a user runs it."""
    folder = tmp_path_factory.mktemp("artifacts")
    paths = {"onnxruntime": folder / "demo.onnx", "openvino": folder / "demo.xml"}
    for name, fmt in RUNTIMES.items():
        args = ["--checkpoint", str(DEMO), "--format", fmt, "--out", str(paths[name])]
        assert export_main(args) == 0
    return paths


@pytest.fixture(scope="module")
def scene():
    """A 640x512 scene (letterboxed into the network's 320x256), thermal as demo.pt reads it."""
    sample = SceneGenerator(640, 512, seed=3).sample(1)
    thermal = np.clip((sample.thermal_raw.astype(np.float32) - 5000) / 7000, 0, 1)
    return sample.rgb, thermal


@pytest.fixture(scope="module")
def eager(demo, scene):
    return FusionEngine(demo, device="cpu", score_threshold=0.3, warmup=0).infer(*scene)


def assert_same_detections(actual: Detections, expected: Detections, box_px: float, score: float):
    assert len(expected) > 0
    assert len(actual) == len(expected)
    np.testing.assert_array_equal(actual.labels, expected.labels)
    np.testing.assert_allclose(actual.boxes, expected.boxes, atol=box_px, rtol=0)
    np.testing.assert_allclose(actual.scores, expected.scores, atol=score, rtol=0)


def test_export_writes_the_artifact_and_its_metadata(demo, artifacts):
    folder = artifacts["openvino"].parent
    assert sorted(p.name for p in folder.iterdir()) == [
        "demo.bin",
        "demo.onnx",
        "demo.xml",
        "demo.xml.json",  # OpenVINO IR has no field for it: a sidecar
    ]
    sidecar = json.loads((folder / "demo.xml.json").read_text())
    graph = onnx.load(str(artifacts["onnxruntime"]))
    embedded = json.loads({p.key: p.value for p in graph.metadata_props}["fusion_perception.json"])
    for meta, fmt in ((sidecar, "openvino"), (embedded, "onnx")):
        assert meta["format"] == fmt and meta["fp16"] is False
        assert meta["fingerprint"] == demo.fingerprint()
        assert meta["class_names"] == ["person", "car"] and meta["input_size"] == [320, 256]
        assert meta["thermal_normalization"] == demo.thermal_normalization
        assert meta["outputs"][:2] == ["fused", "fusion_weight"]


@pytest.mark.parametrize("name", sorted(RUNTIMES))
def test_engine_on_a_backend_matches_eager(demo, artifacts, scene, eager, name):
    engine = FusionEngine(
        demo, device="cpu", score_threshold=0.3, warmup=0, backend=name, artifact=artifacts[name]
    )
    assert engine.backend.name == name
    result = engine.infer(*scene)
    # float32 runtimes: the same boxes to 1/100 px, the fused image to one grey level
    assert_same_detections(result.detections, eager.detections, box_px=0.01, score=1e-4)
    assert result.fused_luma.shape == eager.fused_luma.shape
    assert np.abs(result.fused_luma.astype(int) - eager.fused_luma).max() <= 1


def test_openvino_takes_the_cameras_uint8_frame(demo, artifacts, scene):
    """The RGB frame reaches OpenVINO as uint8 HxWx3 (scaled inside its graph): `prepare` makes
    no float copy, and the outputs match eager PyTorch on the float tensors the others take."""
    engine = FusionEngine(
        demo, device="cpu", warmup=0, backend="openvino", artifact=artifacts["openvino"]
    )
    rgb = np.ascontiguousarray(scene[0][:256, :320])
    thermal = np.ascontiguousarray(scene[1][:256, :320])
    prepared_rgb, prepared_thermal = engine.backend.prepare(rgb, thermal)
    assert prepared_rgb.dtype == np.uint8 and prepared_rgb.shape == (1, 256, 320, 3)
    assert np.shares_memory(prepared_rgb, rgb)  # a view: no pass over the pixels
    assert prepared_thermal.shape == (1, 1, 256, 320)
    with pytest.raises(ValueError, match="takes uint8 pixels, got float32"):
        engine.backend.prepare(rgb.astype(np.float32) / 255, thermal)
    outputs = engine.backend.forward(prepared_rgb, prepared_thermal)
    with torch.inference_mode():
        expected = engine.model(*frame_tensors(rgb, thermal, CPU))
    for name in ("fused", "cls_logits", "boxes"):
        np.testing.assert_allclose(outputs[name].numpy(), expected[name].numpy(), atol=2e-4)


def test_check_input_of_a_checkpoint_in_degrees(demo):
    """A fixed range in degrees below zero cannot be reached by uint16 counts; the synthetic check
    input is normalized as float, so such a checkpoint still gets a thermal image to check on."""
    celsius = {"scheme": "fixed_range", "version": 1, "params": {"lo": -40.0, "hi": 0.0}}
    celsius["params"]["nonfinite_fill"] = None
    rgb, thermal = check_inputs(dataclasses.replace(demo, thermal_normalization=celsius))
    assert rgb.dtype == np.uint8 and thermal.dtype == np.float32
    assert thermal.shape == rgb.shape[:2] and thermal.min() >= 0 and thermal.max() <= 1


def test_frame_tensors_are_the_networks_float_inputs():
    rgb = np.random.default_rng(1).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    thermal = np.linspace(0, 1, 96, dtype=np.float32).reshape(8, 12)
    rgb_in, thermal_in = frame_tensors(rgb, thermal, CPU)
    assert rgb_in.shape == (1, 3, 8, 12) and rgb_in.dtype == torch.float32
    assert rgb_in.is_contiguous() and thermal_in.shape == (1, 1, 8, 12)
    expected = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    assert torch.equal(rgb_in, expected)
    assert torch.equal(thermal_in[0, 0], torch.from_numpy(thermal))


def test_auto_takes_the_fastest_installed_runtime(demo, artifacts, monkeypatch):
    assert resolve_backend("auto", CPU) == "openvino"
    assert resolve_backend("auto", torch.device("cuda")) == (
        "tensorrt" if installed("tensorrt") else "torch"
    )
    engine = FusionEngine(
        demo, device="cpu", warmup=0, backend="auto", artifact=artifacts["openvino"]
    )
    assert engine.backend.name == "openvino"  # from the artifact's suffix
    assert resolve_backend("auto", CPU, "model.engine") == "tensorrt"
    with pytest.raises(BackendError, match=r"cannot tell the runtime of artifact model\.bin"):
        resolve_backend("auto", CPU, "model.bin")
    with pytest.raises(BackendError, match=r"backend: 'tflite' is not one of \['auto', 'torch'"):
        resolve_backend("tflite", CPU)
    monkeypatch.setitem(sys.modules, "openvino", None)  # import fails from here on
    assert resolve_backend("auto", CPU) == "onnxruntime"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert resolve_backend("auto", CPU) == "torch"


def test_on_the_fly_export_is_cached_and_reused(demo, tmp_path, monkeypatch):
    monkeypatch.setenv("FUSION_PERCEPTION_CACHE", str(tmp_path))
    exports = []
    real_export = exporting.export_checkpoint

    def counting_export(*args, **kwargs):
        exports.append(args[1])
        return real_export(*args, **kwargs)

    monkeypatch.setattr(exporting, "export_checkpoint", counting_export)
    FusionEngine(demo, device="cpu", warmup=0, backend="openvino")
    files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    key = demo.fingerprint()[:24]
    assert [str(p) for p in files] == [
        f"{key}/openvino/model.bin",
        f"{key}/openvino/model.xml",
        f"{key}/openvino/model.xml.json",
    ]  # no staging folder left behind
    written = {p: (tmp_path / p).stat().st_mtime_ns for p in files}
    engine = FusionEngine(demo, device="cpu", warmup=0, backend="openvino")
    assert engine.backend.name == "openvino"
    assert exports == ["openvino"]  # the second engine reused the export
    assert {p: (tmp_path / p).stat().st_mtime_ns for p in files} == written


@pytest.mark.parametrize("name", sorted(RUNTIMES))
def test_artifact_of_another_checkpoint_is_refused(demo, artifacts, name):
    state = dict(demo.state_dict)
    state["detection_head.cls_logits.bias"] = state["detection_head.cls_logits.bias"] + 0.1
    retrained = dataclasses.replace(demo, state_dict=state)
    assert retrained.fingerprint() != demo.fingerprint() == load_checkpoint(DEMO).fingerprint()
    with pytest.raises(ArtifactMismatchError, match="fingerprint mismatch, it was exported from"):
        FusionEngine(retrained, device="cpu", warmup=0, backend=name, artifact=artifacts[name])


def test_altered_weights_are_refused_naming_the_output(demo, artifacts, tmp_path):
    graph = onnx.load(str(artifacts["onnxruntime"]))
    (bias,) = [t for t in graph.graph.initializer if t.name == "detection_head.cls_logits.bias"]
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 0.5, bias.name))
    altered = tmp_path / "altered.onnx"
    onnx.save(graph, str(altered))  # the metadata (and its fingerprint) still claim demo.pt
    pattern = r"output 'cls_logits': max abs error 0\.5 exceeds .* \(artifact .*altered\.onnx"
    with pytest.raises(ExportMismatchError, match=pattern):
        FusionEngine(demo, device="cpu", warmup=0, backend="onnxruntime", artifact=altered)


@pytest.mark.parametrize("name", sorted(RUNTIMES))
def test_missing_runtime_names_the_package(demo, artifacts, monkeypatch, name):
    monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(BackendUnavailableError) as caught:
        FusionEngine(demo, device="cpu", warmup=0, backend=name, artifact=artifacts[name])
    message = str(caught.value)
    assert f"the Python package '{name}' is not installed" in message
    assert f"pip install {name}" in message and "rosdep" in message


def test_missing_tensorrt_names_the_package_and_cuda(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailableError, match="'tensorrt' is not installed") as caught:
        require_runtime("tensorrt")
    assert "TensorRT needs CUDA" in str(caught.value)
    assert "pip install tensorrt" in str(caught.value) and "python3-libnvinfer" in str(caught.value)


def test_backend_errors_name_the_problem(demo, artifacts):
    with pytest.raises(BackendError, match="backend torch runs the checkpoint itself"):
        FusionEngine(demo, device="cpu", warmup=0, backend="torch", artifact=artifacts["openvino"])
    pattern = "backend tensorrt: runs on cuda, not cpu; on cpu use torch, onnxruntime, openvino"
    with pytest.raises(BackendError, match=pattern):
        FusionEngine(demo, device="cpu", warmup=0, backend="tensorrt")
    with pytest.raises(BackendError, match=r"artifact: .*missing\.xml does not exist"):
        FusionEngine(demo, device="cpu", warmup=0, backend="openvino", artifact="missing.xml")


def test_fusion_info_times_a_backend(artifacts, capsys):
    args = [str(DEMO), "--backend", "openvino", "--artifact", str(artifacts["openvino"])]
    assert info.main([*args, "--runs", "2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"forward +\d+\.\d ms median, .*\(2 runs, backend openvino on cpu", out), out
    with pytest.raises(ValueError, match="runs the exported graph at the checkpoint's input"):
        info.describe(DEMO, (640, 512), "cpu", 1, "openvino")
    with pytest.raises(ValueError, match="--backend openvino: needs a checkpoint"):
        info.describe(REPO / "config/models/nano.yaml", None, "cpu", 1, "openvino")


@needs_tensorrt
def test_tensorrt_fp16_engine_matches_eager(demo, scene, tmp_path):
    path = tmp_path / "demo.engine"
    args = ["--checkpoint", str(DEMO), "--format", "tensorrt", "--fp16", "--out", str(path)]
    assert export_main(args) == 0
    assert json.loads((tmp_path / "demo.engine.json").read_text())["fp16"] is True
    engine = FusionEngine(
        demo, device="cuda", score_threshold=0.3, warmup=0, backend="tensorrt", artifact=path
    )
    reference = FusionEngine(demo, device="cuda", fp16=False, score_threshold=0.3, warmup=0)
    result, expected = engine.infer(*scene), reference.infer(*scene)
    assert np.abs(result.fused_luma.astype(int) - expected.fused_luma).mean() < 2.0
    # half precision: boxes within ~2 % of their size; confident boxes do not come and go
    strong = expected.detections.scores > 0.4
    kept = Detections(*(a[strong] for a in dataclasses.astuple(expected.detections)))
    ours = result.detections
    for box, label in zip(kept.boxes, kept.labels, strict=True):
        near = np.abs(ours.boxes[:, :4] - box[:4]).max(axis=1) <= 0.02 * box[2:4].max() + 1.0
        assert np.any(near & (ours.labels == label)), box
