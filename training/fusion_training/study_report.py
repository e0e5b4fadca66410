"""The multitask study's report: per-arm mean ± sd over seeds, the verdict, the plot, the JSON.

The verdict rule (issue 3/6): UnityGrad wins only if it lies beyond the weighted-sum front on both
tasks by more than the seed sd. Concretely, with the margin on each axis the larger of the two
arms' seed sds: UnityGrad must beat at least one weighted-sum point on both axes by more than the
margin, and no weighted-sum point may be within the margin of it or better on both axes.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusion_perception.schema import json_safe
from fusion_training.study import (
    ARM_BY_NAME,
    DATA,
    NIGHT_SCENES,
    VIFB_METRICS,
    finite,
    sweep_arms,
)

# (detection metric, fusion metric) of each data set-up's trade-off plane; both held apart.
AXES = {
    "synthetic": ("night/mAP50", "vifb/Qabf"),
    "real": ("llvip/person_AP50", "vifb/Qabf"),
}
AXIS_LABEL = {
    "night/mAP50": f"detection: synthetic night mAP50 ({NIGHT_SCENES} scenes)",
    "llvip/person_AP50": "detection: LLVIP person AP50 (50 night pairs)",
    "vifb/Qabf": "fusion: VIFB Qabf (21 pairs, textbook)",
}
# For each data set-up: UnityGrad, its fixed-weight control, the weighted-sum arms of its front.
KEY_ARMS = {
    "synthetic": ("unitygrad", "fixed_alpha", [a.name for a in sweep_arms("synthetic")]),
    "real": ("real_unitygrad", "real_fixed_alpha", ["real_ws_0.40", "real_ws_best"]),
}
DIAGNOSTICS = (
    ("cosine_mean", "cos(g_f, g_d) mean"),
    ("ema_cosine_last", "EMA cos last"),
    ("detection_to_fusion_grad", "‖g_d‖/‖g_f‖ median"),
    ("alpha_ratio", "α_d/α_f median"),
    ("clip_factor_mean", "clip factor mean"),
    ("step_ms", "step ms"),
)


@dataclass
class ArmSummary:
    """One arm over its seeds."""

    name: str
    data: str
    method: str
    image_skip: bool
    blank: str | None
    seeds: list[int]
    lambdas: list[float]
    per_seed: dict[int, dict[str, float]]
    diagnostics: dict[int, dict[str, Any]]
    mean: dict[str, float] = field(default_factory=dict)
    sd: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        keys = sorted({k for m in self.per_seed.values() for k in m})
        for key in keys:
            values = [m[key] for m in self.per_seed.values() if finite(m.get(key))]
            if values:
                self.mean[key] = statistics.fmean(values)
                self.sd[key] = statistics.stdev(values) if len(values) > 1 else 0.0

    def diag(self, key: str) -> float | None:
        values = [d.get(key) for d in self.diagnostics.values()]
        values = [v for v in values if finite(v)]
        return statistics.fmean(values) if values else None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.method,
            "lambda": self.lambdas[0] if len(set(self.lambdas)) == 1 else self.lambdas,
            "image_skip": self.image_skip,
            "blank": self.blank,
            "data": self.data,
            "seeds": self.seeds,
            "per_seed": {str(s): m for s, m in self.per_seed.items()},
            "diagnostics": {str(s): d for s, d in self.diagnostics.items()},
            "mean": self.mean,
            "sd": self.sd,
        }


def summarize(
    results: Sequence[Mapping[str, Any]], known: Mapping[str, Any] | None = None
) -> dict[str, ArmSummary]:
    """Results by arm (``known``: the arms by name; default the multitask study's)."""
    known = known or ARM_BY_NAME
    by_arm: dict[str, list[Mapping[str, Any]]] = {}
    for result in results:
        by_arm.setdefault(result["arm"], []).append(result)
    arms = {}
    for name, unsorted in by_arm.items():
        runs = sorted(unsorted, key=lambda r: r["seed"])
        arm = known[name]
        arms[name] = ArmSummary(
            name,
            arm.data,
            arm.method,
            arm.image_skip,
            arm.blank,
            [r["seed"] for r in runs],
            [r["detection_weight"] for r in runs],
            {r["seed"]: r["metrics"] for r in runs},
            {r["seed"]: r["diagnostics"] for r in runs},
        )
    return arms


# ----------------------------------------------------------------------------- verdict


def _margin(a: ArmSummary, b: ArmSummary, key: str) -> float:
    return max(a.sd.get(key, 0.0), b.sd.get(key, 0.0))


def beats(a: ArmSummary, b: ArmSummary, axes: Sequence[str]) -> bool:
    """a better than b on every axis by more than the larger seed sd."""
    return all(a.mean[k] > b.mean[k] + _margin(a, b, k) for k in axes)


def matches(a: ArmSummary, b: ArmSummary, axes: Sequence[str]) -> bool:
    """a and b within the larger seed sd of each other on every axis."""
    return all(abs(a.mean[k] - b.mean[k]) <= _margin(a, b, k) for k in axes)


def verdict(arms: Mapping[str, ArmSummary], data: str) -> dict[str, Any] | None:
    """UnityGrad against the weighted-sum front of one data set-up, with the measured reasons."""
    ug_name, fixed_name, front_names = KEY_ARMS[data]
    axes = AXES[data]
    ug = arms.get(ug_name)
    front = [arms[n] for n in front_names if n in arms and all(k in arms[n].mean for k in axes)]
    if ug is None or not front or not all(k in ug.mean for k in axes):
        return None
    beaten = [w.name for w in front if beats(ug, w, axes)]
    not_worse = [  # front points UnityGrad is not clearly beyond
        w.name for w in front if all(w.mean[k] >= ug.mean[k] - _margin(ug, w, k) for k in axes)
    ]
    win = bool(beaten) and not not_worse and len(ug.seeds) > 1
    dominating = [w.name for w in front if beats(w, ug, axes)]
    facts = {
        "win": win,
        "unitygrad": ug_name,
        "seeds": len(ug.seeds),
        "axes": list(axes),
        "front": [w.name for w in front],
        "beats": beaten,
        "not_beyond": not_worse,
        "beaten_by": dominating,
        "premise_holds_runs": sum(bool(d.get("premise_holds")) for d in ug.diagnostics.values()),
        "cosine_mean": ug.diag("cosine_mean"),
        "ema_cosine_last": ug.diag("ema_cosine_last"),
        "detection_to_fusion_grad": ug.diag("detection_to_fusion_grad"),
        "alpha_ratio": ug.diag("alpha_ratio"),
    }
    fixed = arms.get(fixed_name)
    if fixed is not None and all(k in fixed.mean for k in axes):
        facts["fixed_control"] = fixed_name
        facts["fixed_matches"] = matches(ug, fixed, axes)
    facts["text"] = verdict_text(ug, front, facts)
    return facts


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def _agreement(cosine: float | None) -> str:
    if cosine is None:
        return "were not measured"
    if abs(cosine) < 0.1:
        return "are nearly orthogonal"
    return "conflict" if cosine < 0 else "agree"


def verdict_text(ug: ArmSummary, front: Sequence[ArmSummary], facts: Mapping[str, Any]) -> str:
    det, fus = facts["axes"]
    where = (
        f"UnityGrad ({_pm(ug, det)} {det}, {_pm(ug, fus)} {fus}, {facts['seeds']} seeds) "
        "against the weighted-sum front ("
        + "; ".join(f"{w.name}: {_pm(w, det)}, {_pm(w, fus)}" for w in front)
        + ")"
    )
    if facts["win"]:
        return (
            f"**UnityGrad wins.** {where}: it beats {', '.join(facts['beats'])} on both tasks by "
            "more than the seed sd and no weighted-sum λ reaches it."
        )
    if facts["beaten_by"]:
        outcome = f"it is behind {', '.join(facts['beaten_by'])} on both tasks"
    elif facts["not_beyond"]:
        outcome = (
            f"it is not beyond {', '.join(facts['not_beyond'])} on both tasks by more than the "
            "seed sd (a point on or inside the front)"
        )
    else:
        outcome = "it beats no weighted-sum point on both tasks by more than the seed sd"
    if facts["seeds"] < 2:
        outcome += "; one seed only, so no spread to judge by"
    held, runs = facts["premise_holds_runs"], facts["seeds"]
    cosines = (
        f"cosine mean {_num(facts['cosine_mean'])}, EMA cosine at the end "
        f"{_num(facts['ema_cosine_last'])}; Nash's premise of conflicting gradients held at "
        f"times in {held} of {runs} runs"
    )
    reasons = [
        f"the tasks' shared gradients {_agreement(facts['cosine_mean'])} ({cosines})",
        f"detection's shared gradient is {_num(facts['detection_to_fusion_grad'])}x fusion's, so "
        f"the bargaining solution weights the tasks α_d/α_f = {_num(facts['alpha_ratio'])}",
    ]
    if "fixed_matches" in facts:
        reasons.append(
            f"a weighted sum with that fixed ratio ({facts['fixed_control']}) "
            + (
                "matches UnityGrad within the seed sd: the bargaining acts as a fixed reweighting"
                if facts["fixed_matches"]
                else "does not match it within the seed sd"
            )
        )
    return (
        f"**UnityGrad does not win.** {where}: {outcome}. Measured reasons: "
        + "; ".join(reasons)
        + ". Recipes keep `weighted_sum` as their default; UnityGrad stays an option "
        "(`mtl.method: unitygrad`)."
    )


# ----------------------------------------------------------------------------- tables


def _pm(arm: ArmSummary, key: str, digits: int = 3) -> str:
    if key not in arm.mean:
        return "–"
    if len(arm.seeds) < 2:
        return f"{arm.mean[key]:.{digits}f} (1 seed)"
    return f"{arm.mean[key]:.{digits}f} ± {arm.sd[key]:.{digits}f}"


def _lambda(arm: ArmSummary) -> str:
    if arm.method == "unitygrad":
        return "(cancels)"
    values = sorted(set(arm.lambdas))
    if len(values) == 1:
        return f"{values[0]:.3g}"
    return "/".join(f"{v:.3g}" for v in arm.lambdas)


def arm_table(arms: Sequence[ArmSummary], data: str) -> list[str]:
    det, _ = AXES[data]
    columns = [det, *(f"vifb/{k}" for k in VIFB_METRICS[:5])]
    if data == "synthetic":
        columns.append("llvip/person_AP50")
    else:
        columns.append("night/mAP50")
    columns += ["val/mAP50", "val/fusion/Qabf"]
    lines = [
        "| arm | method | λ | image skip | seeds | " + " | ".join(columns) + " |",
        "|---|---|---|---|---|" + "---|" * len(columns),
    ]
    for arm in arms:
        cells = [_pm(arm, key) for key in columns]
        lines.append(
            f"| {arm.name} | {arm.method} | {_lambda(arm)} | {'yes' if arm.image_skip else 'no'} "
            f"| {len(arm.seeds)} | " + " | ".join(cells) + " |"
        )
    return lines


def diagnostics_table(arms: Sequence[ArmSummary]) -> list[str]:
    lines = [
        "| arm | " + " | ".join(label for _, label in DIAGNOSTICS) + " | premise held |",
        "|---|" + "---|" * (len(DIAGNOSTICS) + 1),
    ]
    for arm in arms:
        cells = [_num(arm.diag(key), 3) for key, _ in DIAGNOSTICS]
        held = sum(bool(d.get("premise_holds")) for d in arm.diagnostics.values())
        measured = sum(d.get("premise_holds") is not None for d in arm.diagnostics.values())
        cells.append(f"{held} of {measured} runs" if measured else "not measured")
        lines.append(f"| {arm.name} | " + " | ".join(cells) + " |")
    return lines


# ----------------------------------------------------------------------------- plot


def plot(arms: Mapping[str, ArmSummary], path: Path) -> bool:
    """One panel per data set-up: the λ front and the other arms, mean ± sd error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [d for d in AXES if any(a.data == d and a.blank is None for a in arms.values())]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), dpi=100)
    axes = [axes] if len(panels) == 1 else list(axes)
    for ax, data in zip(axes, panels, strict=True):
        det, fus = AXES[data]
        present = [a for a in arms.values() if a.data == data and det in a.mean and fus in a.mean]
        front_names = KEY_ARMS[data][2]
        front = sorted(
            (a for a in present if a.name in front_names), key=lambda a: statistics.fmean(a.lambdas)
        )
        if front:
            ax.errorbar(
                [a.mean[fus] for a in front],
                [a.mean[det] for a in front],
                xerr=[a.sd[fus] for a in front],
                yerr=[a.sd[det] for a in front],
                fmt="-o",
                color="tab:blue",
                capsize=3,
                label="weighted sum (λ sweep)",
            )
            for a in front:
                ax.annotate(f"λ={_lambda(a)}", (a.mean[fus], a.mean[det]), fontsize=8,
                            xytext=(4, 4), textcoords="offset points")  # fmt: skip
        others = [a for a in present if a.name not in front_names]
        colours = ("tab:red", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink")
        for i, a in enumerate(others):
            ax.errorbar(
                a.mean[fus],
                a.mean[det],
                xerr=a.sd[fus],
                yerr=a.sd[det],
                fmt="sD^v<>pP*hX"[i % 11],
                color=colours[i % len(colours)],
                capsize=3,
                label=a.name,
            )
        ax.set(xlabel=AXIS_LABEL[fus], ylabel=AXIS_LABEL[det], title=f"{data} training data")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Multitask methods: both tasks on held-apart data (mean ± sd over seeds)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------- report


def render(
    arms: Mapping[str, ArmSummary],
    verdicts: Mapping[str, Any],
    seeds: Sequence[int],
    figure: str | None,
    left: Sequence[str],
) -> str:
    lines = [
        "# Multitask study: UnityGrad against a weighted sum, on held-apart data",
        "",
        f"Produced by `python -m fusion_training.study` (`make study`), report of "
        f"{time.strftime('%Y-%m-%d')}; each run's date and machine are in its cached result "
        "(`docs/mtl_study_runs/<arm>/seed<k>.json`). "
        f"Seeds {', '.join(map(str, seeds))}; every (arm, seed) trains from scratch.",
        "",
        "Held apart, never used to train or choose: fusion on VIFB's 21 pairs (textbook metrics, "
        "the fused image from `FusionEngine` at the sources' resolution), detection on a fixed "
        f"set of {NIGHT_SCENES} synthetic night scenes and on the 50-pair LLVIP sample (person "
        "AP50). The real arms' \"best λ\" is the synthetic sweep's best balanced *validation* "
        "score (mAP50 and Qabf, each over its best). Short CPU budgets: the study compares "
        "methods under one budget; it does not reproduce the paper's M3FD numbers.",
        "",
        "Data set-ups:",
        "",
    ]
    lines += [f"- **{d.name}**: {d.description} (`{d.config}`)." for d in DATA.values()]
    lines += ["", "## Verdict", ""]
    for data, found in verdicts.items():
        lines += [f"- *{data} data*: " + (found["text"] if found else "not enough runs yet."), ""]
    if figure:
        lines += [f"![study]({figure})", ""]
    for data in DATA:
        chosen = [a for a in arms.values() if a.data == data and a.blank is None]
        if not chosen:
            continue
        lines += [f"## Arms on {data} data (mean ± sd over seeds)", ""]
        lines += arm_table(chosen, data)
        lines += ["", "### Task gradients and α (UnityGrad's premise), mean over seeds", ""]
        lines += diagnostics_table([a for a in chosen if a.method != "weighted_sum"] or chosen)
        lines.append("")
    single = [arms[n] for n in ("ws_0.40", "rgb_only", "thermal_only") if n in arms]
    if len(single) > 1:
        lines += [
            "## Which cameras the model sees (synthetic, weighted sum at λ = 0.4)",
            "",
            "| model | night mAP50 | day mAP50 | seeds |",
            "|---|---|---|---|",
        ]
        for arm in single:
            lines.append(
                f"| {arm.name} | {_pm(arm, 'night/mAP50')} | {_pm(arm, 'day/mAP50')} | "
                f"{len(arm.seeds)} |"
            )
        lines += [
            "",
            "The single-camera models train and are evaluated with the other camera always "
            "blanked (modality dropout with probability 1).",
            "",
        ]
    lines += [
        "## How to read it",
        "",
        "- λ is `loss.detection_weight`; the methods get the tasks (1 − λ)·L_f and λ·L_d. Under "
        "UnityGrad λ cancels exactly; the fixed-weight control is a weighted sum whose λ gives "
        "the tasks UnityGrad's median effective weights α_d·λ : α_f·(1 − λ) from the same seed "
        "(Adam's step does not depend on a common scale of the loss).",
        "- The verdict rule: " + " ".join(__doc__.split("rule (issue 3/6): ")[1].split()),
        "- Premise numbers come from each run's `mtl_summary.json` and `train_log.csv`: cosine "
        "of the two tasks' shared gradients per measured step, its EMA, ‖g_d‖/‖g_f‖, α, and the "
        "shared-gradient clip factor.",
        "",
    ]
    if left:
        lines += ["## Not run yet", ""] + [f"- {line}" for line in left] + [""]
    return "\n".join(lines)


def write(
    results: Sequence[Mapping[str, Any]], seeds: Sequence[int], out: Path, left: Sequence[str]
) -> Path:
    """docs/mtl_study.{md,json,png} from the cached results."""
    out.mkdir(parents=True, exist_ok=True)
    arms = summarize(results)
    verdicts = {data: verdict(arms, data) for data in DATA}
    figure = "mtl_study.png" if plot(arms, out / "mtl_study.png") else None
    text = render(arms, verdicts, seeds, figure, left)
    (out / "mtl_study.md").write_text(text, encoding="utf-8")
    raw = {
        "seeds": list(seeds),
        "data": {
            d.name: {"config": str(d.config), "description": d.description} for d in DATA.values()
        },
        "axes": AXES,
        "arms": [arm.to_json() for arm in arms.values()],
        "verdict": verdicts,
        "not_run": list(left),
    }
    text = json.dumps(json_safe(raw), indent=1, allow_nan=False)
    (out / "mtl_study.json").write_text(text + "\n", encoding="utf-8")
    return out / "mtl_study.md"
