"""CLDyN's task compensation: the identity at initialisation, the task feature steering it, the
reward–penalty loss, a frozen fusion network and consumer during its training, its file, and the
engine and node parameters that run it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

from conftest import few_steps
from fusion_training.cldyn import CLDyNConfigError, load_cldyn_config, reward_penalty, train
from fusion_training.config import load_training_config
from fusion_training.trainer import Trainer

from fusion_perception.checkpoint import load_checkpoint
from fusion_perception.compensation import (
    Compensation,
    CompensationError,
    DownstreamDetector,
    consumer_image,
    load_compensation,
    luminance,
    save_compensation,
)
from fusion_perception.engine import FusionEngine
from fusion_perception.model.compensation import (
    OPERATOR_DILATIONS,
    CompensationConfig,
    CompensationNet,
)

REPO = Path(__file__).resolve().parents[1]
NANO = REPO / "config" / "training" / "synthetic_nano.yaml"
SMALL = CompensationConfig(channels=4, filters=2, basis_vectors=8, embed_dim=16)


def _inputs(batch: int = 2, height: int = 24, width: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, 1, height, width, generator=g) for _ in range(3)]


def _randomise_zero_layers(net: CompensationNet) -> None:
    """What training does first: the zero-initialised convs take non-zero weights."""
    for conv in [net.head, *(block.out for block in net.blocks)]:
        torch.nn.init.normal_(conv.weight, std=0.5)


def test_a_fresh_compensation_is_exactly_the_identity():
    torch.manual_seed(0)
    net = CompensationNet(SMALL, task_features=6)
    fused, lum, thermal = _inputs()
    for mode in (net.train, net.eval):
        mode()
        correction = net(fused, lum, thermal, torch.randn(2, 6))
        assert correction.shape == (2, 1, 24, 32)
        assert torch.equal(correction, torch.zeros_like(correction))
        assert torch.equal(CompensationNet.apply(fused, correction), fused)


def test_the_correction_depends_on_the_task_feature_and_reaches_every_block():
    torch.manual_seed(0)
    net = CompensationNet(SMALL, task_features=6).eval()
    _randomise_zero_layers(net)
    fused, lum, thermal = _inputs()
    task = torch.randn(1, 6).expand(2, -1)
    a = net(fused, lum, thermal, task)
    b = net(fused, lum, thermal, -task)
    assert not torch.allclose(a, b, atol=1e-4)  # the consumer's requirement steers it
    net.train()
    net(fused, lum, thermal, torch.randn(2, 6)).square().mean().backward()
    for name, parameter in net.named_parameters():
        if name.endswith("prototypes"):
            continue
        assert parameter.grad is not None, name
    assert all(block.bank.grad.abs().sum() > 0 for block in net.blocks)
    assert net.task_embed[1].weight.grad.abs().sum() > 0


def test_operators_are_one_per_filter_and_the_1x1_type_keeps_only_the_centre_tap():
    torch.manual_seed(0)
    block = CompensationNet(SMALL, task_features=6).blocks[0]
    queries = torch.randn(3, SMALL.filters, SMALL.embed_dim)
    for mode in (block.train, block.eval):
        mode()
        chosen = block.choose_operators(queries)
        assert chosen.shape == (3, SMALL.filters, len(OPERATOR_DILATIONS))
        assert torch.equal(chosen.sum(-1), torch.ones(3, SMALL.filters))
    masks = block.kernel_masks
    one_by_one = [k for k, (size, _) in enumerate(OPERATOR_DILATIONS) if size == 1]
    assert one_by_one and all(masks[k].sum() == 1 and masks[k][..., 1, 1] == 1 for k in one_by_one)


def test_reward_penalty_adds_delta_times_the_harm_and_never_trains_the_plain_loss():
    plain = torch.tensor(1.5, requires_grad=True)
    worse = torch.tensor(2.0, requires_grad=True)
    loss = reward_penalty(worse, plain, penalty=5.0)
    assert loss.item() == pytest.approx(2.0 + 5.0 * 0.5)
    loss.backward()
    assert worse.grad.item() == pytest.approx(6.0) and plain.grad is None
    better = torch.tensor(1.0, requires_grad=True)
    assert reward_penalty(better, plain, 5.0).item() == pytest.approx(1.0)


def test_the_consumer_image_keeps_the_visible_chroma():
    rgb = torch.rand(1, 3, 8, 8) * 0.5 + 0.25
    fused = torch.full((1, 1, 8, 8), 0.6)
    out = consumer_image(fused, rgb)
    assert torch.allclose(luminance(out), fused, atol=1e-6)
    assert torch.allclose(out - luminance(out), rgb - luminance(rgb), atol=1e-6)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step fusion checkpoint, a 2-step visible-only consumer, and 3 compensation steps."""
    root = tmp_path_factory.mktemp("cldyn")
    size = {"input_size": [128, 96]}
    fusion = Trainer(load_training_config(NANO, few_steps(root / "fusion", **size))).fit()
    blank = {"augment.options.dropout_probability": 1.0, "augment.options.dropout_rgb_share": 0.0}
    consumer = Trainer(
        load_training_config(NANO, few_steps(root / "consumer", seed=1, **size, **blank))
    ).fit()
    cfg = load_cldyn_config(
        REPO / "config" / "training" / "cldyn_real.yaml",
        {
            "fusion_checkpoint": str(fusion.last_checkpoint),
            "downstream_checkpoint": str(consumer.last_checkpoint),
            "data_config": str(NANO),
            "output": str(root / "compensation.pt"),
            "steps": 3,
            "device": "cpu",
            "progress": False,
            "compensation": {"embed_dim": 32, "basis_vectors": 8},
        },
    )
    before = {
        name: load_checkpoint(path).state_dict
        for name, path in (
            ("fusion", fusion.last_checkpoint),
            ("consumer", consumer.last_checkpoint),
        )
    }
    path, log = train(cfg)
    return cfg, path, log, before


def test_training_moves_only_the_compensation_and_writes_a_file_the_engine_runs(trained):
    cfg, path, log, before = trained
    assert len(log) == 3 and log[0]["task_compensated"] == pytest.approx(log[0]["task_plain"])
    assert log[0]["correction_abs"] == 0.0 and log[-1]["correction_abs"] > 0.0
    assert (path.parent / "compensation_log.csv").is_file()
    for name, file in (("fusion", cfg.fusion_checkpoint), ("consumer", cfg.downstream_checkpoint)):
        after = load_checkpoint(file).state_dict
        assert all(torch.equal(after[k], v) for k, v in before[name].items()), name
    compensation = load_compensation(path)
    assert compensation.provenance["config"]["penalty"] == 5.0
    assert next(iter(compensation.net.state_dict().values())).dtype == torch.float32
    rgb = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    thermal = np.random.default_rng(1).random((96, 128), dtype=np.float32)
    plain = FusionEngine(cfg.fusion_checkpoint, device="cpu").infer(rgb, thermal)
    engine = FusionEngine(cfg.fusion_checkpoint, device="cpu", compensation=path)
    compensated = engine.infer(rgb, thermal)
    assert compensated.fused_luma.shape == plain.fused_luma.shape
    assert not np.array_equal(compensated.fused_luma, plain.fused_luma)
    # the detections are the fusion network's own: compensation only changes the image
    assert np.array_equal(compensated.detections.boxes, plain.detections.boxes)


def test_an_untrained_compensation_changes_nothing_in_the_engine(trained, tmp_path):
    cfg, *_ = trained
    fusion = load_checkpoint(cfg.fusion_checkpoint)
    fresh = Compensation.fresh(
        SMALL, load_checkpoint(cfg.downstream_checkpoint), fusion.fingerprint()
    )
    path = save_compensation(fresh, tmp_path / "fresh.pt", half=True)
    assert path.stat().st_size < save_compensation(fresh, tmp_path / "full.pt").stat().st_size
    rgb = np.random.default_rng(2).integers(0, 255, (120, 150, 3), dtype=np.uint8)
    thermal = np.random.default_rng(3).random((120, 150), dtype=np.float32)
    plain = FusionEngine(fusion, device="cpu").infer(rgb, thermal).fused_luma
    same = FusionEngine(fusion, device="cpu", compensation=path).infer(rgb, thermal).fused_luma
    assert np.array_equal(plain, same)


def test_a_compensation_refuses_another_fusion_checkpoint_and_bad_files(trained, tmp_path):
    cfg, path, *_ = trained
    with pytest.raises(CompensationError, match="trained for the fusion checkpoint"):
        FusionEngine(cfg.downstream_checkpoint, device="cpu", compensation=path)
    with pytest.raises(CompensationError, match="a model checkpoint: give it as checkpoint"):
        load_compensation(cfg.fusion_checkpoint)
    with pytest.raises(CompensationError, match="does not exist"):
        load_compensation(tmp_path / "missing.pt")
    data = torch.load(path, weights_only=True)
    del data["state_dict"]["head.weight"]
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(CompensationError, match="does not fit its config"):
        load_compensation(tmp_path / "bad.pt")


def test_the_consumer_is_frozen_but_passes_gradients_to_its_image(trained):
    cfg, *_ = trained
    detector = DownstreamDetector(load_checkpoint(cfg.downstream_checkpoint)).train()
    assert not detector.model.training
    image = torch.rand(2, 3, 96, 128, requires_grad=True)
    out, features = detector.run(image)
    assert features.shape == (2, detector.task_features)
    with torch.no_grad():  # the per-frame path: image-only backbone, no detection head
        fast = detector.features(image)
        assert torch.allclose(fast, features, atol=1e-5)
        assert torch.allclose(detector.features(image[:1]), features[:1], atol=1e-5)
    targets = [
        {"boxes": torch.tensor([[40.0, 40.0, 20.0, 30.0, 0.0]]), "labels": torch.tensor([0])}
    ] * 2
    detector.loss(out, targets).backward()
    assert image.grad.abs().sum() > 0
    assert all(p.grad is None for p in detector.model.parameters())


def test_config_errors_name_the_key(tmp_path):
    base = REPO / "config" / "training" / "cldyn_real.yaml"
    with pytest.raises(CLDyNConfigError, match="penalty"):
        load_cldyn_config(base, {"penalty": -1.0})
    with pytest.raises(CLDyNConfigError, match=r"tau must be a finite number > 0"):
        load_cldyn_config(base, {"compensation.tau": 0.0})
    with pytest.raises(CLDyNConfigError, match="unknown config key 'stepz'"):
        load_cldyn_config(base, {"stepz": 3})


def test_node_parameters_pick_the_consumer(trained):
    pytest.importorskip("rclpy")
    from fusion_perception.ros import configure

    assert configure._compensation({"fusion_task": "viewer", "compensation": "x"}) is None
    cfg, path, *_ = trained
    loaded = configure._compensation({"fusion_task": "detector", "compensation": str(path)})
    assert isinstance(loaded, Compensation)
    with pytest.raises(
        ValueError, match=r"parameter compensation: compensation: .* not a compensation file"
    ):
        configure._compensation(
            {"fusion_task": "detector", "compensation": str(cfg.fusion_checkpoint)}
        )


def test_the_packaged_compensation_belongs_to_the_packaged_model_and_changes_its_image():
    packaged = REPO / "models" / "demo_compensation.pt"
    assert packaged.stat().st_size < 12e6  # float16 parameters: the consumer's + its own
    compensation = load_compensation(packaged)
    demo = load_checkpoint(REPO / "models" / "demo.pt")
    compensation.check_fusion(demo)  # raises if it was trained behind another checkpoint
    assert compensation.provenance["config"]["penalty"] == 5.0
    from fusion_perception.synthetic import SceneGenerator

    scene = SceneGenerator(640, 512, classes=("person", "car"), seed=5).sample(0)
    thermal = np.clip((scene.thermal_raw.astype(np.float32) - 5000) / 7000, 0, 1)
    viewer = FusionEngine(demo, device="cpu").infer(scene.rgb, thermal).fused_luma
    engine = FusionEngine(demo, device="cpu", compensation=compensation)
    detector = engine.infer(scene.rgb, thermal).fused_luma
    assert detector.shape == viewer.shape == (512, 640)
    changed = np.abs(detector.astype(int) - viewer.astype(int))
    assert changed.mean() > 0.5  # a trained compensation, not the identity
