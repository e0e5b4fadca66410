"""fusion-eval --benchmark vifb: ranking among VIFB's published methods (fusion_training.benchmark).

The ranking runs on the first pairs only (--limit) to stay fast; the full 21-pair ranking of the
demo model takes a few minutes on one core.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from fusion_training import benchmark as bm
from fusion_training.cli.eval import main as eval_main

from fusion_perception.cli.common import run_cli
from fusion_perception.colour import merge_fused_luma

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FUSION_SHARED_DATA") or REPO.parent / "shared" / "data")
FILES = (
    "vifb_ranking.md",
    "vifb_ranking.json",
    "vifb_ranking_textbook.png",
    "vifb_ranking_vifb.png",
)


@pytest.fixture(scope="module")
def data_root() -> Path:
    needed = [DATA / "vifb" / "vis", DATA / "vifb" / "ir", DATA / "vifb_methods" / "fused"]
    missing = [str(p) for p in needed if not p.is_dir()]
    if missing:
        pytest.skip(f"VIFB shared data not found (set FUSION_SHARED_DATA): missing {missing}")
    return DATA


def _published_as_folder(root: Path, method: str, folder: Path, pairs: list[str]) -> Path:
    folder.mkdir(parents=True)
    for pair in pairs:
        shutil.copy(
            root / "vifb_methods" / "fused" / f"{pair}_{method}.jpg", folder / f"{pair}.jpg"
        )
    return folder


def test_a_published_method_ranks_exactly_as_its_own_row(data_root, tmp_path):
    """U2Fusion's fused images as the method under test, through the CLI: same values and ranks as
    U2Fusion's row, the report files written, VIFB's own values reproduced."""
    pairs = bm.vifb_pairs(data_root, limit=2)
    fused = _published_as_folder(data_root, "U2Fusion", tmp_path / "U2Fusion", pairs)
    out = tmp_path / "rank"
    args = ["--benchmark", "vifb", "--fused", str(fused), "--out", str(out), "--limit", "2"]
    assert eval_main([*args, "--data-root", str(data_root), "--device", "cpu"]) == 0
    for name in FILES:
        assert (out / name).stat().st_size > 500, name
    results = json.loads((out / "vifb_ranking.json").read_text())
    label = results["method"]
    assert label == "U2Fusion (scored)"  # a folder named like a published method is renamed
    assert results["pairs"] == pairs
    for convention, section in results["conventions"].items():
        assert section["metrics"] == list(bm.CONVENTION_METRICS[convention])
        assert section["ranked"] == [label, *bm.PUBLISHED]
        assert section["means"][label] == section["means"]["U2Fusion"]
        assert section["per_pair"][label] == section["per_pair"]["U2Fusion"]
        assert section["ranks"][label] == section["ranks"]["U2Fusion"]
        assert section["mean_rank"][label] == section["mean_rank"]["U2Fusion"]
        for metric in section["metrics"]:  # rank = 1 + number of strictly better methods
            sign = -1 if metric in bm.LOWER_IS_BETTER else 1
            ours = section["means"][label][metric]
            better = sum(
                sign * section["means"][m][metric] > sign * ours
                for m in section["ranked"]
                if m not in (label, "U2Fusion")
            )
            assert section["ranks"][label][metric] == 1 + better, (convention, metric)
    deviation = results["conventions"]["vifb"]["reference_deviation"]
    assert max(abs(v) for devs in deviation.values() for v in devs.values()) < 0.02
    text = (out / "vifb_ranking.md").read_text()
    assert "## textbook convention" in text and "## vifb convention" in text
    assert f"| rank of **{label}** |" in text and "VIFB MATLAB" in text
    assert "vifb_ranking_vifb.png" in text


def test_checkpoint_ranking_scores_the_colour_output_for_vifb(data_root, node_checkpoint, tmp_path):
    sources = bm.load_sources(data_root, bm.vifb_pairs(data_root, limit=1))
    fused = bm.fuse_with_checkpoint(node_checkpoint, sources, device="cpu")
    for pair, (rgb, _) in sources.items():
        luma, colour = fused["textbook"][pair], fused["vifb"][pair]
        assert luma.shape == rgb.shape[:2] and luma.dtype == np.uint8
        np.testing.assert_array_equal(colour, merge_fused_luma(luma, rgb))

    out = tmp_path / "rank"
    args = ["--benchmark", "vifb", "--checkpoint", str(node_checkpoint), "--out", str(out)]
    assert eval_main([*args, "--limit", "1", "--data-root", str(data_root), "--device", "cpu"]) == 0
    results = json.loads((out / "vifb_ranking.json").read_text())
    label = results["method"]
    assert label == node_checkpoint.stem and results["source"]["checkpoint"]
    pair = results["pairs"][0]
    rgb, ir = sources[pair]
    vifb = results["conventions"]["vifb"]
    expected = bm.score_images({pair: fused["vifb"][pair]}, {pair: (rgb, ir)}, "vifb")
    assert vifb["per_pair"][label][pair] == pytest.approx(expected.per_pair[pair])
    for section in results["conventions"].values():
        ranks = [r for r in section["ranks"][label].values() if r is not None]
        assert ranks and all(1 <= r <= len(section["ranked"]) for r in ranks)
    assert "fused_rgb(rgb)" in (out / "vifb_ranking.md").read_text()


def test_rank_methods_directions_ties_and_nan():
    means = {
        "a": {"Qabf": 0.5, "RMSE": 0.1, "VIF": math.nan},
        "b": {"Qabf": 0.7, "RMSE": 0.1, "VIF": 0.3},
        "c": {"Qabf": 0.5, "RMSE": 0.3, "VIF": 0.2},
    }
    ranks = bm.rank_methods(means, ["Qabf", "RMSE", "VIF"], ["a", "b", "c"])
    assert ranks["b"] == {"Qabf": 1, "RMSE": 1, "VIF": 1}
    assert ranks["a"] == {"Qabf": 2, "RMSE": 1, "VIF": None}  # ties share the better rank
    assert ranks["c"] == {"Qabf": 2, "RMSE": 3, "VIF": 2}  # RMSE: lower is better
    assert bm.mean_rank(ranks["a"]) == 1.5


def test_benchmark_flag_errors(tmp_path, capsys):
    out = str(tmp_path / "rank")
    cases = {
        "exactly one of --checkpoint and --fused": ["--benchmark", "vifb"],
        "drop --rgb": ["--benchmark", "vifb", "--fused", str(tmp_path), "--rgb", str(tmp_path)],
        "drop --preset": ["--benchmark", "vifb", "--fused", str(tmp_path), "--preset", "vifb"],
        "drop --skip-invalid": ["--benchmark", "vifb", "--fused", str(tmp_path), "--skip-invalid"],
        "--data-root: only with --benchmark": ["--fused", str(tmp_path), "--data-root", "x"],
        str(tmp_path / "nowhere" / "vifb" / "vis"): [
            "--benchmark",
            "vifb",
            "--fused",
            str(tmp_path),
            "--data-root",
            str(tmp_path / "nowhere"),
        ],
    }
    for message, argv in cases.items():
        assert run_cli("fusion-eval", eval_main, [*argv, "--out", out]) == 2, message
        assert message in capsys.readouterr().err
    assert not (tmp_path / "rank").exists()


def test_missing_fused_pairs_are_named(data_root, tmp_path, capsys):
    pairs = bm.vifb_pairs(data_root, limit=2)
    fused = _published_as_folder(data_root, "CNN", tmp_path / "cnn", pairs[:1])
    argv = ["--benchmark", "vifb", "--fused", str(fused), "--out", str(tmp_path / "o")]
    assert run_cli("fusion-eval", eval_main, [*argv, "--limit", "2"]) == 2
    assert pairs[1] in capsys.readouterr().err
