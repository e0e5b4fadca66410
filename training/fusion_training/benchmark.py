"""Rank a fusion method among VIFB's published methods on VIFB's 21 real pairs.

VIFB (Zhang, Ye, Xiao, CVPR Workshops 2020) publishes the fused images of five deep methods (CNN,
DLF, ResNet, U2Fusion, SeAFusion) on its pairs, and the values its MATLAB toolbox computed for them.
This module scores a method under test and those five with the same code
(`fusion_training.metrics.fusion.evaluate_fusion`) in two conventions:

- ``textbook``: the textbook definitions; a colour fused image is scored on its BT.601 luma.
- ``vifb``: VIFB's own conventions (preset ``vifb``): a colour fused image is scored channel by
  channel and the three values averaged, VIFB's 13 metrics, PSNR ~60 dB, MI in nats. VIFB's MATLAB
  means for the published methods are kept beside ours as a check.

and ranks the method under test per metric (1 = best; RMSE, CE and Qcv are better when lower; ties
share the better rank). `write_report` writes a markdown table, one bar plot per convention and a
JSON file; `run_vifb` is what ``fusion-eval --benchmark vifb`` calls.

Data (``$FUSION_SHARED_DATA`` or ``../shared/data`` beside the repository, see
`fusion_training.real_pairs.default_data_root`): ``vifb/{vis,ir}/<pair>.jpg`` and
``vifb_methods/fused/<pair>_<method>.jpg``, ``vifb_methods/vifb_metrics.json``. Nothing here
imports ROS; `fuse_with_checkpoint` needs torch.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from fusion_perception.image_files import index_images
from fusion_training.evaluate import FUSION_METRICS, json_ready
from fusion_training.metrics.fusion import evaluate_fusion, prepare_image
from fusion_training.real_pairs import default_data_root

BENCHMARKS = ("vifb",)
PUBLISHED = ("CNN", "DLF", "ResNet", "U2Fusion", "SeAFusion")
BASELINES = ("pixel average", "pixel max")
CONVENTIONS = ("textbook", "vifb")  # each is a preset of fusion_training.metrics.fusion
# Our metric name -> the key VIFB's MATLAB output (vifb_metrics.json) uses for it.
VIFB_NAMES = {
    "EN": "Entropy",
    "SD": "Variance",
    "SF": "Spatial_frequency",
    "AG": "Avg_gradient",
    "MI": "Mutinf",
    "Qabf": "Qabf",
    "SSIM": "Ssim",
    "PSNR": "Psnr",
    "RMSE": "Rmse",
    "CE": "Cross_entropy",
    "EI": "Edge_intensity",
    "Qcb": "Qcb",
    "Qcv": "Qcv",
}
CONVENTION_METRICS: dict[str, tuple[str, ...]] = {
    "textbook": FUSION_METRICS,  # what fusion-eval reports
    "vifb": tuple(VIFB_NAMES),  # what VIFB reports
}
LOWER_IS_BETTER = frozenset({"RMSE", "CE", "Qcv"})
REPORT_STEM = "vifb_ranking"


# ----------------------------------------------------------------------------- data


def vifb_paths(root: str | os.PathLike | None = None) -> dict[str, Path]:
    """The folders and files of the benchmark under a shared data root (default: see module)."""
    root = default_data_root() if root is None else Path(root)
    return {
        "root": root,
        "vis": root / "vifb" / "vis",
        "ir": root / "vifb" / "ir",
        "fused": root / "vifb_methods" / "fused",
        "reference": root / "vifb_methods" / "vifb_metrics.json",
    }


def vifb_pairs(root: str | os.PathLike | None = None, limit: int | None = None) -> list[str]:
    """Sorted names of the pairs that have both a visible and an infrared image (first `limit`)."""
    if limit is not None and limit < 1:
        raise ValueError(f"--limit: must be >= 1, got {limit}")
    paths = vifb_paths(root)
    for kind in ("vis", "ir"):
        if not paths[kind].is_dir():
            raise FileNotFoundError(
                f"VIFB pairs not found: folder {paths[kind]} does not exist (pass --data-root or "
                "set FUSION_SHARED_DATA to the shared data root that holds vifb/)"
            )
    vis, ir = index_images(Path(paths["vis"])), index_images(Path(paths["ir"]))
    names = sorted(set(vis) & set(ir))
    if not names:
        raise FileNotFoundError(f"VIFB pairs not found: no common stem in {paths['vis']} and ir/")
    return names[:limit]


def read_as_stored(path: Path) -> np.ndarray:
    """uint8 image as stored: HxW for a one-channel file, RGB HxWx3 for a three-channel one.

    A three-channel file stays colour even when its channels are equal, as VIFB's MATLAB reads it
    (the ``vifb`` convention scores it channel by channel).
    """
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"cannot read image {path}")
    if image.dtype != np.uint8:
        raise ValueError(f"{path}: fused and source images must be 8-bit, found {image.dtype}")
    if image.ndim == 3:
        return cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2RGB)
    return image


def load_sources(
    root: str | os.PathLike | None, pairs: Sequence[str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """pair -> (visible RGB uint8, infrared grey uint8); VIFB stores the infrared as 3 equal
    channels, which become one (as `fusion-infer` reads thermal)."""
    paths = vifb_paths(root)
    vis, ir = index_images(Path(paths["vis"])), index_images(Path(paths["ir"]))
    out = {}
    for pair in pairs:
        rgb = read_as_stored(vis[pair])
        if rgb.ndim == 2:
            rgb = cv2.cvtColor(rgb, cv2.COLOR_GRAY2RGB)
        thermal = read_as_stored(ir[pair])
        if thermal.ndim == 3:
            thermal = cv2.cvtColor(thermal, cv2.COLOR_RGB2GRAY)
        out[pair] = (rgb, thermal)
    return out


def published_image(root: str | os.PathLike | None, method: str, pair: str) -> np.ndarray:
    path = vifb_paths(root)["fused"] / f"{pair}_{method}.jpg"
    if not path.is_file():
        raise FileNotFoundError(f"published fused image {path} does not exist")
    return read_as_stored(path)


def pixel_baselines(rgb: np.ndarray, ir: np.ndarray) -> dict[str, np.ndarray]:
    """Average and maximum of the visible luma (the metrics' own BT.601 Y) and the infrared."""
    luma, warm = prepare_image(rgb), ir.astype(np.float64)
    return {
        "pixel average": np.round((luma + warm) / 2).astype(np.uint8),
        "pixel max": np.maximum(luma, warm).astype(np.uint8),
    }


def reference_means(
    root: str | os.PathLike | None, pairs: Sequence[str]
) -> dict[str, dict[str, float]] | None:
    """VIFB's MATLAB means over `pairs` per published method (our metric names); None when the
    file is absent."""
    path = vifb_paths(root)["reference"]
    if not path.is_file():
        return None
    values = json.loads(path.read_text())["metrics"]
    out = {}
    for method in PUBLISHED:
        per_pair = values.get(method, {})
        if not all(pair in per_pair for pair in pairs):
            continue
        out[method] = {
            name: float(np.mean([per_pair[p][key] for p in pairs]))
            for name, key in VIFB_NAMES.items()
        }
    return out


# ----------------------------------------------------------------------------- fused inputs


def fused_from_folder(folder: str | os.PathLike, pairs: Sequence[str]) -> dict[str, np.ndarray]:
    """pair -> fused image read as stored from ``folder/<pair>.<ext>`` (any image suffix)."""
    found = index_images(Path(folder))
    missing = [p for p in pairs if p not in found]
    if missing:
        raise FileNotFoundError(
            f"--fused: {folder} has no image for {len(missing)} of the {len(pairs)} VIFB pairs "
            f"(files are named by pair, e.g. {missing[0]}.png): {missing[:10]}"
        )
    return {pair: read_as_stored(found[pair]) for pair in pairs}


def fuse_with_checkpoint(
    checkpoint: str | os.PathLike,
    sources: Mapping[str, tuple[np.ndarray, np.ndarray]],
    device: str = "auto",
    progress: bool = False,
    backend: str = "torch",
    artifact: str | os.PathLike | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Run a checkpoint through FusionEngine on every pair: convention -> pair -> fused image.

    ``textbook``: ``result.fused_luma`` (uint8, at the visible camera's resolution). ``vifb``: the
    colour image ``result.fused_rgb(rgb)`` (fused luma with the visible image's chroma), scored
    channel by channel as VIFB scores the published colour outputs. Thermal input: ir / 255.
    """
    from fusion_perception.engine import FusionEngine

    engine = FusionEngine(checkpoint, device=device, backend=backend, artifact=artifact)
    out: dict[str, dict[str, np.ndarray]] = {"textbook": {}, "vifb": {}}
    for pair, (rgb, ir) in tqdm(sources.items(), desc="fuse", unit="pair", disable=not progress):
        result = engine.infer(rgb, ir.astype(np.float32) / 255.0)
        out["textbook"][pair] = result.fused_luma
        out["vifb"][pair] = result.fused_rgb(rgb)
    return out


# ----------------------------------------------------------------------------- scoring


@dataclass
class MethodScores:
    """Per-pair values of one method in one convention, and their means over finite values."""

    per_pair: dict[str, dict[str, float]] = field(default_factory=dict)
    means: dict[str, float] = field(default_factory=dict)
    non_finite: dict[str, int] = field(default_factory=dict)

    def finish(self, metrics: Sequence[str]) -> MethodScores:
        for name in metrics:
            values = np.array([v[name] for v in self.per_pair.values()], dtype=np.float64)
            finite = values[np.isfinite(values)]
            self.means[name] = float(finite.mean()) if finite.size else math.nan
            if finite.size < values.size:
                self.non_finite[name] = int(values.size - finite.size)
        return self


def _metrics(convention: str, metrics: Sequence[str] | None) -> list[str]:
    if convention not in CONVENTION_METRICS:
        raise ValueError(f"convention: {convention!r} is not one of {CONVENTIONS}")
    return list(CONVENTION_METRICS[convention] if metrics is None else metrics)


def score_images(
    fused: Mapping[str, np.ndarray],
    sources: Mapping[str, tuple[np.ndarray, np.ndarray]],
    convention: str,
    metrics: Sequence[str] | None = None,
) -> MethodScores:
    """Score fused images (pair -> uint8 HxW or RGB HxWx3) against their pairs in a convention."""
    names = _metrics(convention, metrics)
    scores = MethodScores()
    for pair, (rgb, ir) in sources.items():
        image = fused[pair]
        if image.shape[:2] != rgb.shape[:2]:
            raise ValueError(
                f"fused image of {pair} is {image.shape[1]}x{image.shape[0]}, its pair "
                f"{rgb.shape[1]}x{rgb.shape[0]}; fused images must keep the pair's size"
            )
        scores.per_pair[pair] = evaluate_fusion(image, rgb, ir, preset=convention, metrics=names)
    return scores.finish(names)


def score_published(
    root: str | os.PathLike | None,
    sources: Mapping[str, tuple[np.ndarray, np.ndarray]],
    conventions: Sequence[str] = CONVENTIONS,
    baselines: bool = False,
    metrics: Mapping[str, Sequence[str]] | None = None,
    progress: bool = False,
) -> dict[str, dict[str, MethodScores]]:
    """convention -> method -> scores of VIFB's published fused images (and, with `baselines`,
    the pixel average/max of each pair), each image read once and scored in every convention."""
    methods = [*PUBLISHED, *(BASELINES if baselines else ())]
    names = {c: _metrics(c, (metrics or {}).get(c)) for c in conventions}
    out = {c: {m: MethodScores() for m in methods} for c in conventions}
    for pair, (rgb, ir) in tqdm(
        sources.items(), desc="VIFB published", unit="pair", disable=not progress
    ):
        images = {m: published_image(root, m, pair) for m in PUBLISHED}
        if baselines:
            images.update(pixel_baselines(rgb, ir))
        for method, image in images.items():
            if image.shape[:2] != rgb.shape[:2]:
                raise ValueError(f"published {method} image of {pair} is not the size of its pair")
            for c in conventions:
                out[c][method].per_pair[pair] = evaluate_fusion(
                    image, rgb, ir, preset=c, metrics=names[c]
                )
    for c in conventions:
        for scores in out[c].values():
            scores.finish(names[c])
    return out


def rank_methods(
    means: Mapping[str, Mapping[str, float]], metrics: Sequence[str], ranked: Sequence[str]
) -> dict[str, dict[str, int | None]]:
    """method -> metric -> competition rank among `ranked` (1 = best; equal values share the
    better rank; a NaN mean gets None and is not counted against the others)."""
    out: dict[str, dict[str, int | None]] = {m: {} for m in ranked}
    for name in metrics:
        sign = -1.0 if name in LOWER_IS_BETTER else 1.0
        for method in ranked:
            value = means[method][name]
            if math.isnan(value):
                out[method][name] = None
                continue
            better = 0
            for other in ranked:
                theirs = means[other][name]
                if other == method or math.isnan(theirs):
                    continue
                if sign * theirs > sign * value and not math.isclose(theirs, value, rel_tol=1e-12):
                    better += 1
            out[method][name] = 1 + better
    return out


def mean_rank(ranks: Mapping[str, int | None]) -> float:
    values = [r for r in ranks.values() if r is not None]
    return float(np.mean(values)) if values else math.nan


def run_benchmark(
    name: str,
    fused: Mapping[str, Mapping[str, np.ndarray]],
    sources: Mapping[str, tuple[np.ndarray, np.ndarray]],
    root: str | os.PathLike | None = None,
    conventions: Sequence[str] = CONVENTIONS,
    baselines: bool = False,
    description: str = "",
    colour_note: str = "",
    progress: bool = False,
) -> dict[str, Any]:
    """Score the method under test (`fused`: convention -> pair -> image; a convention missing
    from it falls back to the ``textbook`` images) and the published methods, and rank.

    Returns plain data: ``{"method", "pairs", "conventions": {c: {"metrics", "means",
    "per_pair", "non_finite", "ranks", "mean_rank", "ranked", "vifb_reference"?}}, ...}``; the
    method under test comes first in every mapping, then the published methods, then baselines.
    """
    if name in PUBLISHED or name in BASELINES:
        name = f"{name} (scored)"
    started = time.perf_counter()
    pairs = list(sources)
    published = score_published(root, sources, conventions, baselines, progress=progress)
    reference = reference_means(root, pairs) if "vifb" in conventions else None
    out: dict[str, Any] = {
        "benchmark": "vifb",
        "method": name,
        "description": description,
        "colour_note": colour_note,
        "pairs": pairs,
        "data_root": os.path.relpath(vifb_paths(root)["root"]),  # no build-machine paths
        "conventions": {},
    }
    for c in conventions:
        images = fused.get(c, fused.get("textbook"))
        if images is None:
            raise ValueError(f"fused: no images for convention {c!r}")
        scored = {name: score_images(images, sources, c), **published[c]}
        metrics = _metrics(c, None)
        ranked = [name, *PUBLISHED]
        ranks = rank_methods({m: s.means for m, s in scored.items()}, metrics, ranked)
        section: dict[str, Any] = {
            "preset": c,
            "metrics": metrics,
            "lower_is_better": [m for m in metrics if m in LOWER_IS_BETTER],
            "ranked": ranked,
            "means": {m: s.means for m, s in scored.items()},
            "per_pair": {m: s.per_pair for m, s in scored.items()},
            "non_finite": {m: s.non_finite for m, s in scored.items() if s.non_finite},
            "ranks": ranks,
            "mean_rank": {m: mean_rank(r) for m, r in ranks.items()},
        }
        if c == "vifb" and reference:
            section["vifb_reference"] = reference
            section["reference_deviation"] = {
                m: {k: section["means"][m][k] / v - 1.0 for k, v in ref.items() if v}
                for m, ref in reference.items()
            }
        out["conventions"][c] = section
    out["scoring_s"] = time.perf_counter() - started
    return out


# ----------------------------------------------------------------------------- report


CAPTIONS = {
    "textbook": (
        "Textbook definitions (preset `textbook`); every colour fused image is scored on its "
        "BT.601 luma against the visible image's luma and the infrared."
    ),
    "vifb": (
        "VIFB's conventions (preset `vifb`, which reproduces VIFB's MATLAB values): a colour fused "
        "image is scored channel by channel against the visible RGB and the infrared and the "
        "three values are averaged (a grey fused image against the visible image's luma); SSIM "
        "is summed over both sources, PSNR and RMSE use VIFB's sqrt(SSE)/(MN) error, MI is in "
        "nats."
    ),
}


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    size = abs(value)
    digits = 1 if size >= 100 else 2 if size >= 10 else 3 if size >= 1 else 4
    return f"{value:.{digits}f}"


def _arrow(metric: str) -> str:
    return "↓" if metric in LOWER_IS_BETTER else "↑"


def markdown(results: Mapping[str, Any], figures: Mapping[str, str] | None = None) -> str:
    """The report: per convention a table of means (best ranked value bold), the rank of the
    method under test per metric, a bar plot, and for ``vifb`` VIFB's own values as a check."""
    name = results["method"]
    pairs = results["pairs"]
    lines = [
        f"# {name} among VIFB's published fusion methods",
        "",
        f"Means over {len(pairs)} VIFB pairs (Zhang, Ye, Xiao, CVPR Workshops 2020) of "
        "`fusion_training.metrics.fusion.evaluate_fusion`. The published methods' values are "
        "computed by the same code from the fused images VIFB publishes. Rank 1 is best "
        f"(↑ higher is better, ↓ lower); ties share the better rank; ranked among {name} and "
        f"{', '.join(PUBLISHED)}.",
        "",
    ]
    if results.get("description"):
        lines += [f"Method under test: {results['description']}", ""]
    if len(pairs) < 21:
        lines += [f"**Partial run: {len(pairs)} pairs ({', '.join(pairs)}).**", ""]
    for c, section in results["conventions"].items():
        metrics, ranked = section["metrics"], section["ranked"]
        means, ranks = section["means"], section["ranks"]
        best = {}
        for metric in metrics:
            values = [(means[m][metric], m) for m in ranked if math.isfinite(means[m][metric])]
            if values:
                pick = min if metric in LOWER_IS_BETTER else max
                best[metric] = pick(values)[0]
        caption = CAPTIONS[c]
        if c == "vifb" and results.get("colour_note"):
            caption += " " + results["colour_note"]
        lines += [
            f"## {c} convention",
            "",
            caption,
            "",
            "| method | " + " | ".join(f"{m} {_arrow(m)}" for m in metrics) + " | mean rank |",
            "|---|" + "---:|" * (len(metrics) + 1),
        ]
        for method, row in means.items():
            cells = []
            for metric in metrics:
                text = _fmt(row[metric])
                if method in ranked and metric in best and row[metric] == best[metric]:
                    text = f"**{text}**"
                cells.append(text)
            label = f"**{method}**" if method == name else method
            if method not in ranked:
                label = f"*{method}* (baseline, not ranked)"
            rank = _fmt(section["mean_rank"][method]) if method in ranked else ""
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {rank} |")
        cells = [
            "-" if ranks[name][m] is None else f"{ranks[name][m]}/{len(ranked)}" for m in metrics
        ]
        lines.append(
            f"| rank of **{name}** | "
            + " | ".join(cells)
            + f" | {_fmt(section['mean_rank'][name])} |"
        )
        if section["non_finite"]:
            lines += ["", f"Left out of the means as NaN/inf (images): {section['non_finite']}."]
        reference = section.get("vifb_reference")
        if reference:
            worst = max(
                (
                    (abs(v), m, k)
                    for m, devs in section["reference_deviation"].items()
                    for k, v in devs.items()
                ),
                default=None,
            )
            lines += [
                "",
                "Check: VIFB's own MATLAB values (`vifb_metrics.json`), means over the same pairs:",
                "",
                "| VIFB MATLAB | " + " | ".join(metrics) + " |",
                "|---|" + "---:|" * len(metrics),
            ]
            for method, row in reference.items():
                lines.append(
                    f"| {method} | " + " | ".join(_fmt(row.get(m)) for m in metrics) + " |"
                )
            if worst is not None:
                lines += [
                    "",
                    f"Largest deviation of the recomputed means from VIFB's: {100 * worst[0]:.2g} % "
                    f"({worst[2]}, {worst[1]}).",
                ]
        if figures and c in figures:
            lines += ["", f"![{c} convention, per metric]({figures[c]})"]
        lines.append("")
    return "\n".join(lines)


def bar_plot(results: Mapping[str, Any], convention: str, path: Path) -> None:
    """One panel per metric: every method's mean, the method under test in red, baselines
    hatched; the panel title gives its rank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    section = results["conventions"][convention]
    name, metrics = results["method"], section["metrics"]
    methods = list(section["means"])
    cols = 5
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.9 * rows), squeeze=False)
    any_zoomed = False
    for ax, metric in zip(axes.flat, metrics, strict=False):
        values = [section["means"][m][metric] for m in methods]
        values = [v if math.isfinite(v) else 0.0 for v in values]
        colours = [
            "tab:red" if m == name else "tab:grey" if m in section["ranked"] else "white"
            for m in methods
        ]
        bars = ax.bar(range(len(methods)), values, color=colours, edgecolor="black", linewidth=0.5)
        for bar, method in zip(bars, methods, strict=True):
            if method not in section["ranked"]:
                bar.set_hatch("//")
        lo, hi = min(values), max(values)
        zoomed = lo > 0 and hi - lo < 0.5 * hi  # close values: start the axis near them
        if zoomed:
            pad = 0.2 * (hi - lo) if hi > lo else 0.05 * hi
            ax.set_ylim(lo - pad, hi + pad)
        rank = section["ranks"][name][metric]
        any_zoomed = any_zoomed or zoomed
        ax.set_title(
            f"{metric} {_arrow(metric)}  rank {rank if rank else '-'}/{len(section['ranked'])}",
            fontsize=9,
        )
        ax.set_xticks(range(len(methods)), methods, rotation=60, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.suptitle(
        f"VIFB ({len(results['pairs'])} pairs), {convention} convention: {name} (red) among the "
        "published methods" + ("; y axes start near the smallest value" if any_zoomed else ""),
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(results: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``vifb_ranking.md``, ``vifb_ranking_<convention>.png`` and ``vifb_ranking.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    figures = {}
    for c in results["conventions"]:
        paths[c] = out / f"{REPORT_STEM}_{c}.png"
        bar_plot(results, c, paths[c])
        figures[c] = paths[c].name
    paths["markdown"] = out / f"{REPORT_STEM}.md"
    paths["markdown"].write_text(markdown(results, figures), encoding="utf-8")
    paths["json"] = out / f"{REPORT_STEM}.json"
    paths["json"].write_text(json.dumps(json_ready(results), indent=1, allow_nan=False))
    return paths


def run_vifb(
    out_dir: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    fused: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    limit: int | None = None,
    device: str = "auto",
    name: str | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    backend: str = "torch",
    artifact: str | os.PathLike | None = None,
) -> tuple[dict[str, Any], dict[str, Path]]:
    """``fusion-eval --benchmark vifb``: rank a checkpoint or a folder of fused images (one per
    pair, named by pair) on VIFB's pairs in both conventions and write the report to `out_dir`."""
    if (checkpoint is None) == (fused is None):
        raise ValueError("--benchmark: needs exactly one of --checkpoint and --fused")
    started = time.perf_counter()
    root = default_data_root() if data_root is None else Path(data_root)
    pairs = vifb_pairs(root, limit)
    sources = load_sources(root, pairs)
    if checkpoint is not None:
        images = fuse_with_checkpoint(
            checkpoint, sources, device, progress, backend=backend, artifact=artifact
        )
        label = name or Path(checkpoint).stem
        description = (
            f"checkpoint `{checkpoint}` through `FusionEngine` (thermal input = infrared / 255); "
            "textbook: its fused luma; vifb: its colour output."
        )
        colour_note = (
            f"{label}'s row scores its colour output `result.fused_rgb(rgb)` (its fused luma with "
            "the visible image's chroma), as VIFB scores the published colour outputs."
        )
    else:
        images = {"textbook": fused_from_folder(fused, pairs)}
        label = name or Path(fused).resolve().name
        description = f"fused images from `{fused}`, scored as stored."
        colour_note = ""
    results = run_benchmark(
        label,
        images,
        sources,
        root,
        description=description,
        colour_note=colour_note,
        progress=progress,
    )
    results["source"] = {
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "fused": None if fused is None else str(fused),
        "limit": limit,
    }
    results["runtime_s"] = time.perf_counter() - started
    paths = write_report(results, out_dir)
    if log is not None:
        log(f"wrote {', '.join(str(p) for p in paths.values())}")
    return results, paths
