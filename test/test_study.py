"""The multitask study: the verdict rule, the fixed-weight control, and a resumable tiny study
that trains real runs and scores them on the held-apart data."""

from __future__ import annotations

import json
import math

import pytest
from conftest import SHARED_DATA
from fusion_training import study
from fusion_training.study import alpha_ratio, fixed_lambda, main
from fusion_training.study_report import ArmSummary, verdict

DET, FUS = "night/mAP50", "vifb/Qabf"


def _arm(name, method, points, lam=0.4, cosine=0.01):
    """An arm whose seeds scored (detection, fusion) = points."""
    per_seed = {seed: {DET: det, FUS: fus} for seed, (det, fus) in enumerate(points)}
    diagnostics = {
        seed: {
            "premise_holds": False,
            "cosine_mean": cosine,
            "ema_cosine_last": cosine,
            "detection_to_fusion_grad": 200.0,
            "alpha_ratio": 0.01,
        }
        for seed in per_seed
    }
    return ArmSummary(
        name, "synthetic", method, True, None, list(per_seed), [lam] * len(per_seed), per_seed,
        diagnostics,
    )  # fmt: skip


def _front(*means):
    names = ["ws_0.20", "ws_0.40", "ws_0.60", "ws_0.80", "ws_0.95"]
    return {
        name: _arm(name, "weighted_sum", [(d - 0.01, f - 0.01), (d, f), (d + 0.01, f + 0.01)])
        for name, (d, f) in zip(names, means, strict=False)
    }


def test_fixed_weight_control_copies_unitygrads_effective_task_weights():
    # α_d·λ : α_f·(1 − λ) = 0.5·0.4 : 1·0.6 -> λ' = 0.2 / 0.8
    assert fixed_lambda(0.4, 0.5) == pytest.approx(0.25)
    assert fixed_lambda(0.4, 1.0) == pytest.approx(0.4)
    rows = [
        {"alpha/fusion": 2.0, "alpha/detection": 1.0},
        {"alpha/fusion": 0.0, "alpha/detection": 5.0},  # detection only: not a solve of both
        {"alpha/fusion": 1.0, "alpha/detection": 1.0},
        {"alpha/fusion": 4.0, "alpha/detection": 1.0},
        {},  # a step that did not measure
    ]
    assert alpha_ratio(rows) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="solved α for both tasks"):
        alpha_ratio([{"alpha/fusion": 1.0, "alpha/detection": 0.0}])


def test_unitygrad_wins_only_beyond_the_front_by_more_than_the_seed_sd():
    front = _front((0.20, 0.60), (0.40, 0.55), (0.50, 0.45))
    beyond = [(0.54, 0.61), (0.55, 0.62), (0.56, 0.63)]
    found = verdict({**front, "unitygrad": _arm("unitygrad", "unitygrad", beyond)}, "synthetic")
    assert found["win"] and set(found["beats"]) == {"ws_0.20", "ws_0.40", "ws_0.60"}
    assert "**UnityGrad wins.**" in found["text"]

    # the same mean, but spread so wide that ws_0.60 is within one sd on both axes
    noisy = [(0.35, 0.42), (0.55, 0.62), (0.75, 0.82)]
    found = verdict({**front, "unitygrad": _arm("unitygrad", "unitygrad", noisy)}, "synthetic")
    assert not found["win"] and "ws_0.60" in found["not_beyond"]

    # on the front's trade-off line: better fusion than ws_0.60, worse detection than it
    inside = [(0.44, 0.49), (0.45, 0.50), (0.46, 0.51)]
    found = verdict({**front, "unitygrad": _arm("unitygrad", "unitygrad", inside)}, "synthetic")
    assert not found["win"] and not found["beats"]
    assert "**UnityGrad does not win.**" in found["text"]
    assert "nearly orthogonal" in found["text"] and "200x fusion's" in found["text"]

    # one seed has no spread to judge by: never a win
    single = {**front, "unitygrad": _arm("unitygrad", "unitygrad", [(0.9, 0.9)])}
    assert not verdict(single, "synthetic")["win"]
    assert verdict(front, "synthetic") is None  # no UnityGrad arm: nothing to decide


def test_the_fixed_control_that_matches_unitygrad_is_called_a_reweighting():
    front = _front((0.20, 0.60), (0.40, 0.55))
    points = [(0.29, 0.49), (0.30, 0.50), (0.31, 0.51)]
    arms = {
        **front,
        "unitygrad": _arm("unitygrad", "unitygrad", points),
        "fixed_alpha": _arm("fixed_alpha", "weighted_sum", points, lam=0.01),
    }
    found = verdict(arms, "synthetic")
    assert found["fixed_matches"] and "acts as a fixed reweighting" in found["text"]
    arms["fixed_alpha"] = _arm("fixed_alpha", "weighted_sum", [(0.6, 0.7), (0.61, 0.71)])
    assert not verdict(arms, "synthetic")["fixed_matches"]


@pytest.fixture
def held_apart():
    needed = [SHARED_DATA / "vifb" / "vis", SHARED_DATA / "llvip_sample" / "LLVIP"]
    missing = [str(p) for p in needed if not p.is_dir()]
    if missing:
        pytest.skip(f"held-apart data not found: {', '.join(missing)} (set FUSION_SHARED_DATA)")
    return SHARED_DATA


@pytest.mark.slow
def test_tiny_study_trains_caches_resumes_and_reports(tmp_path, held_apart, capsys):
    docs, runs = tmp_path / "docs", tmp_path / "runs"
    args = ["--out", str(docs), "--workdir", str(runs), "--data-root", str(held_apart)]
    args += ["--arms", "ws_0.40,unitygrad,fixed_alpha", "--seeds", "0,1", "--max-steps", "2"]
    args += ["--eval-limit", "3"]
    assert main(args) == 0
    assert "trained 6 runs; 0 left undone" in capsys.readouterr().out

    cache = docs / "mtl_study_runs"
    unity = json.loads((cache / "unitygrad" / "seed1.json").read_text())
    fixed = json.loads((cache / "fixed_alpha" / "seed1.json").read_text())
    ratio = unity["diagnostics"]["alpha_ratio"]
    assert ratio > 0 and unity["diagnostics"]["steps"] == 2
    assert fixed["detection_weight"] == pytest.approx(fixed_lambda(0.4, ratio))
    for key in ("night/mAP50", "llvip/person_AP50", "vifb/Qabf", "vifb/VIF", "val/mAP50"):
        assert math.isfinite(unity["metrics"][key]), key
    contrast = {k: unity["metrics"][f"llvip/contrast_{k}"] for k in ("fused", "thermal", "visible")}
    assert contrast["thermal"] > contrast["visible"] > 0  # people glow in thermal at night
    assert math.isfinite(contrast["fused"])

    # a metric added to the suite later is scored from the run's checkpoint, not retrained
    stale = cache / "ws_0.40" / "seed0.json"
    result = json.loads(stale.read_text())
    del result["metrics"]["llvip/contrast_fused"]
    stale.write_text(json.dumps(result))
    cached = study.StudyRuns(cache, (0, 1), max_steps=2, eval_limit=3)
    held = study.HeldApart(held_apart, limit=3)
    ws = [study.ARM_BY_NAME["ws_0.40"]]
    assert study.rescore(ws, cached, runs, held, "cpu", "llvip/contrast_fused") == []
    assert "llvip/contrast_fused" in json.loads(stale.read_text())["metrics"]
    from fusion_training.seed_extensions import draw_pair

    picture = tmp_path / "pair.png"
    assert draw_pair(held, runs, picture, ["ws_0.40", "not_trained"])
    assert picture.stat().st_size > 10_000
    assert not draw_pair(held, runs, tmp_path / "none.png", ["not_trained"])
    (runs / "ws_0.40" / "seed0" / "last.pt").unlink()
    del result["metrics"]["vifb/AG"]
    stale.write_text(json.dumps(result))
    assert study.rescore(ws, cached, runs, held, "cpu", "vifb/AG") == [
        f"ws_0.40 seed 0: no checkpoint in {runs / 'ws_0.40' / 'seed0'} to score vifb/AG"
    ]

    raw = json.loads((docs / "mtl_study.json").read_text())
    arms = {arm["name"]: arm for arm in raw["arms"]}
    assert list(arms) == ["ws_0.40", "unitygrad", "fixed_alpha"]
    assert arms["ws_0.40"]["lambda"] == 0.4 and arms["ws_0.40"]["image_skip"] is True
    assert arms["unitygrad"]["seeds"] == [0, 1] and arms["unitygrad"]["data"] == "synthetic"
    assert set(arms["unitygrad"]["per_seed"]) == {"0", "1"}
    assert raw["verdict"]["synthetic"]["front"] == ["ws_0.40"]
    assert raw["verdict"]["real"] is None
    text = (docs / "mtl_study.md").read_text()
    assert "## Verdict" in text and "![study](mtl_study.png)" in text
    assert "| unitygrad | unitygrad | (cancels) | yes | 2 |" in text
    assert (docs / "mtl_study.png").stat().st_size > 10_000

    # resumable: nothing is retrained; a lost result is the only run trained again
    assert main(args) == 0
    assert "trained 0 runs" in capsys.readouterr().out
    (cache / "ws_0.40" / "seed1.json").unlink()
    assert main(args) == 0
    assert "trained 1 runs" in capsys.readouterr().out
    # another evaluation (or budget) is another study: cached apart by fingerprint, never mixed
    assert main([*args[:-1], "2", "--report-only"]) == 1
    assert "no current cached runs" in capsys.readouterr().err


def test_real_arms_say_how_to_build_their_training_pairs(tmp_path, held_apart, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no data/real_pairs here
    args = ["--out", str(tmp_path / "docs"), "--arms", "real_ws_0.40", "--seeds", "0"]
    assert main([*args, "--data-root", str(held_apart)]) == 2
    assert "fusion-prepare-real --out data/real_pairs" in capsys.readouterr().err


def test_fixed_control_waits_for_its_unitygrad_run(tmp_path, capsys):
    args = ["--out", str(tmp_path), "--arms", "fixed_alpha", "--seeds", "0", "--max-steps", "1"]
    assert main(args) == 1  # nothing trained, nothing to report
    out = capsys.readouterr()
    assert "fixed_alpha seed 0: waits for unitygrad seed 0" in out.out
    assert "no current cached runs" in out.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--arms", "ws_0.40,adamw"], "--arms: unknown ['adamw']"),
        (["--data", "m3fd"], "--data: unknown ['m3fd']"),
        (["--arms", "real_unitygrad", "--data", "synthetic"], "no arm matches both"),
        (["--seeds", "0,x"], "--seeds: comma-separated integers"),
        (["--seeds", "1,1"], "--seeds: distinct integers needed"),
        (["--max-steps", "0"], "--max-steps: must be >= 1, got 0"),
    ],
)
def test_study_rejects_bad_arguments(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        main(["--out", str(tmp_path), *argv])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_seed_extension_report_calls_an_effect_only_beyond_the_seed_sd():
    from fusion_training.seed_extensions import BASELINE, OPTIONS, effect, render

    def arm(name, contrast, qabf):
        per_seed = {
            s: {"llvip/contrast_fused": c, "vifb/Qabf": q}
            for s, (c, q) in enumerate(zip(contrast, qabf, strict=True))
        }
        return ArmSummary(
            name, "real", "weighted_sum", True, None, list(per_seed), [0.4] * 3, per_seed, {}
        )

    base = arm(BASELINE.name, [0.10, 0.11, 0.12], [0.670, 0.671, 0.672])
    option = arm(OPTIONS[0][0].name, [0.20, 0.21, 0.22], [0.669, 0.671, 0.673])
    assert effect(option, base, "llvip/contrast_fused", True) == "helps"
    assert effect(option, base, "vifb/Qabf", True) == "no difference"
    assert effect(base, option, "llvip/contrast_fused", True) == "hurts"
    assert effect(option, base, "night/mAP50", True) == "–"
    text = render(
        {a.name: a for a in (base, option)},
        ["real_tsjnet seed 0: not run yet"],
        {"thermal": 0.3, "visible": 0.05},
    )
    assert (
        "| LLVIP person contrast, fused | 0.110 ± 0.010 | 0.210 ± 0.010 | – | +0.100 (helps) | – |"
        in text
    )
    assert "thermal 0.300, visible 0.050" in text and "- real_tsjnet seed 0: not run yet" in text


def test_cldyn_section_pairs_each_seeds_views_and_says_when_it_is_not_run():
    from fusion_training.seed_extensions import COMPENSATED, render_cldyn

    assert "Not run yet" in "\n".join(render_cldyn(None, None))
    key = "consumer/{}/night_mAP50"
    per_seed = {
        s: {key.format("visible"): 0.03, key.format("viewer"): v, key.format("detector"): d}
        for s, (v, d) in enumerate(((0.08, 0.12), (0.20, 0.23), (0.10, 0.15)))
    }
    cldyn = ArmSummary(
        COMPENSATED.name, "real", "weighted_sum", True, None, [0, 1, 2], [0.4] * 3, per_seed, {}
    )
    text = "\n".join(render_cldyn(cldyn, None))
    # paired over seeds: +0.04, +0.03, +0.05 -> mean +0.040, sd 0.010 (the unpaired sds are ~0.06)
    assert "| synthetic night mAP50 | 0.030 ± 0.000 | 0.127 ± 0.064 | 0.167 ± 0.057 |" in text
    assert "+0.040 ± 0.010 (helps) |" in text
