"""Real RoadScene and TNO pairs -> a paired-folder dataset, with FLIR's boxes mapped onto RoadScene.

Sources under the data root (``$FUSION_SHARED_DATA``, else ``../shared/data`` beside the
repository): ``roadscene/{vis,ir,ir_full,flir_boxes}`` and ``tno/{vis,ir}``; see their README.md.

Registration. RoadScene's README says ``ir/`` was cut out of the 640x512 ``ir_full/`` frame at the
same scale. Measured on the 108 frames with boxes it was not: ``ir/`` is ``ir_full/`` warped by a
homography (scale about 0.88 x 0.79 for most frames, about 1.2 x 1.2 for FLIR_05697..FLIR_08768,
plus a little shear), and a same-scale ``cv2.matchTemplate`` peaks at only 0.41-0.95 (median
0.74). A crop offset alone would misplace the boxes, so each frame is registered with SIFT
features and a RANSAC homography (ir_full -> ir) and then checked by template matching:
``cv2.matchTemplate`` (normalised correlation) of ``ir/`` inside the warped ``ir_full/`` with a
+-3 px margin. A pair keeps its boxes only when the peak correlation is >= ``min_score``, the
peak sits within 1 px of where the homography puts it, the mapping is not mirrored (a flipped
image is matched by a mirror), has >= ``min_inliers`` consistent matches and ``ir/`` lies inside
the frame (coverage >= ``min_coverage``: objects outside it were never annotated). Otherwise the
pair stays in the dataset without labels (fusion only).

Boxes. A FLIR box (COCO x, y, w, h on ir_full) is mapped through the homography by the midpoints
of its edges (corners would inflate it under the shear), clipped to the registered image, and
dropped when less than ``min_visible`` of it stays inside or its shorter side is under
``min_size`` px. Person and car are written; bike is counted and dropped.

Output: ``rgb/<stem>.jpg|png``, ``thermal/<stem>.png`` (8-bit grey), ``labels/<stem>.txt`` (YOLO,
labelled pairs only), ``train.txt`` / ``val.txt`` (val: ``val_fraction`` of the labelled RoadScene
pairs, seeded; every other pair trains), ``summary.json``, ``manifest.yaml`` (written last) and a
figure of the mapped boxes. Stems are ``roadscene_<name>`` and ``tno_<name>``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from tqdm import tqdm

from fusion_perception.image_files import index_images
from fusion_training.datasets.files import DatasetError

ENV_VAR = "FUSION_SHARED_DATA"
TOOL = "fusion-prepare-real"
CLASSES = ("person", "car")
MANIFEST, SUMMARY, FIGURE = "manifest.yaml", "summary.json", "mapped_boxes.png"
SPLIT_FILES = {"train": "train.txt", "val": "val.txt"}
_SEARCH_MARGIN = 3  # px around the homography's placement searched by matchTemplate
_MAX_SHIFT = 1  # px the correlation peak may sit away from it
_RANSAC_PX = 2.0
_RATIO = 0.75  # Lowe's ratio test
_PREVIEW_SUFFIX = "_PreviewData"


def default_data_root() -> Path:
    """``$FUSION_SHARED_DATA``, else ``shared/data`` beside the repository (the source checkout
    this module lives in, or the working directory when it runs from an installed copy)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2]
    repo = checkout if (checkout / "training" / "pyproject.toml").is_file() else Path.cwd()
    return repo.parent / "shared" / "data"


@dataclass(frozen=True)
class PrepareSettings:
    """Thresholds of the tool; each field is the CLI flag of the same name (``--min-score``)."""

    min_score: float = 0.98  # normalised correlation of ir/ against the registered ir_full
    min_inliers: int = 20  # RANSAC-consistent feature matches
    min_coverage: float = 0.98  # share of ir/ that lies inside the ir_full frame
    min_visible: float = 0.5  # share of a mapped box left after clipping
    min_size: float = 4.0  # shortest side (px) of a kept box after clipping
    val_fraction: float = 0.12  # of the labelled RoadScene pairs
    seed: int = 0
    figure_pairs: int = 12

    def __post_init__(self) -> None:
        for name, lo, hi in (
            ("min_score", -1.0, 1.0),
            ("min_coverage", 0.0, 1.0),
            ("min_visible", 0.0, 1.0),
        ):
            if not lo <= getattr(self, name) <= hi:
                raise ValueError(
                    f"{_flag(name)}: must be in [{lo}, {hi}], got {getattr(self, name)}"
                )
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"{_flag('val_fraction')}: must be in (0, 1), got {self.val_fraction}")
        for name in ("min_inliers", "min_size", "figure_pairs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{_flag(name)}: must be >= 0, got {getattr(self, name)}")
        if self.min_inliers < 4:
            raise ValueError(
                f"{_flag('min_inliers')}: a homography needs >= 4, got {self.min_inliers}"
            )


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# ----------------------------------------------------------------------------- FLIR boxes


@dataclass(frozen=True)
class FlirFrame:
    """The boxes of one annotated FLIR frame: (category name, x, y, w, h) on ir_full."""

    source: Path
    boxes: tuple[tuple[str, float, float, float, float], ...]


def read_flir_boxes(folder: Path) -> dict[str, FlirFrame]:
    """RoadScene name (``FLIR_00006``) -> its boxes, from every COCO json file in ``folder``.

    A frame listed in a file's ``images`` but without annotations is annotated with no objects.
    """
    files = sorted(folder.glob("*.json"))
    if not files:
        raise DatasetError(folder, "no COCO .json box files found")
    frames: dict[str, FlirFrame] = {}
    for path in files:
        try:
            data = json.loads(path.read_text())
            categories = {c["id"]: str(c["name"]) for c in data["categories"]}
            ids = [str(image["id"]) for image in data["images"]]
            annotations = data["annotations"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise DatasetError(path, f"not a COCO detection file ({error!r})") from error
        boxes: dict[str, list[tuple[str, float, float, float, float]]] = {i: [] for i in ids}
        for n, annotation in enumerate(annotations):
            image_id, category = str(annotation.get("image_id")), annotation.get("category_id")
            if image_id not in boxes or category not in categories:
                raise DatasetError(
                    path,
                    f"annotation {n} refers to unknown image {image_id!r} or category {category!r}",
                )
            x, y, w, h = (float(v) for v in annotation["bbox"])
            boxes[image_id].append((categories[category], x, y, w, h))
        for image_id, items in boxes.items():
            name = image_id.removesuffix(_PREVIEW_SUFFIX)
            if name in frames:
                raise DatasetError(path, f"frame {image_id} is also in {frames[name].source.name}")
            frames[name] = FlirFrame(path, tuple(items))
    return frames


# ----------------------------------------------------------------------------- registration


@dataclass(frozen=True)
class Registration:
    """How ``ir/`` sits in ``ir_full/``: homography (ir_full -> ir pixel centres), checks, verdict."""

    homography: np.ndarray | None
    score: float  # peak normalised correlation (nan without a homography)
    shift: tuple[int, int] | None  # where the peak is, relative to the homography's placement
    inliers: int
    coverage: float
    reason: str | None  # why the boxes are rejected; None: accepted
    crop_score: float = float(
        "nan"
    )  # best same-scale match (the README's crop model), for reference

    @property
    def accepted(self) -> bool:
        return self.reason is None


def _grey(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise DatasetError(path, "unreadable image (OpenCV could not decode it)")
    return image


def _homography(
    sift: cv2.SIFT, ir: np.ndarray, full: np.ndarray
) -> tuple[np.ndarray | None, int, int]:
    """(homography or None, ratio-test matches, RANSAC inliers)."""
    kp_ir, des_ir = sift.detectAndCompute(ir, None)
    kp_full, des_full = sift.detectAndCompute(full, None)
    if des_ir is None or des_full is None or len(kp_full) < 2:
        return None, 0, 0
    pairs = cv2.BFMatcher().knnMatch(des_ir, des_full, k=2)
    good = [m[0] for m in pairs if len(m) == 2 and m[0].distance < _RATIO * m[1].distance]
    if len(good) < 4:
        return None, len(good), 0
    src = np.float32([kp_full[m.trainIdx].pt for m in good])
    dst = np.float32([kp_ir[m.queryIdx].pt for m in good])
    cv2.setRNGSeed(0)  # RANSAC sampling, so reruns give the same homography
    homography, mask = cv2.findHomography(src, dst, cv2.RANSAC, _RANSAC_PX)
    if homography is None or mask is None:
        return None, len(good), 0
    return homography, len(good), int(mask.sum())


def register(
    ir: np.ndarray, full: np.ndarray, settings: PrepareSettings, sift: cv2.SIFT | None = None
) -> Registration:
    """Register grey ``ir`` (the registered pair's thermal) in grey ``full`` (the FLIR frame)."""
    sift = sift if sift is not None else cv2.SIFT_create()
    crop_score = float("nan")
    if ir.shape[0] <= full.shape[0] and ir.shape[1] <= full.shape[1]:
        crop_score = float(cv2.minMaxLoc(cv2.matchTemplate(full, ir, cv2.TM_CCOEFF_NORMED))[1])
    homography, matches, inliers = _homography(sift, ir, full)
    if homography is None:
        reason = f"no homography from {matches} feature match(es)"
        return Registration(None, float("nan"), None, inliers, 0.0, reason, crop_score)
    h, w = ir.shape
    m = _SEARCH_MARGIN
    around = np.array([[1.0, 0.0, m], [0.0, 1.0, m], [0.0, 0.0, 1.0]]) @ homography
    warped = cv2.warpPerspective(full, around, (w + 2 * m, h + 2 * m))
    inside = cv2.warpPerspective(np.full_like(full, 255), homography, (w, h))
    coverage = float(np.mean(inside == 255))
    with np.errstate(invalid="ignore", divide="ignore"):
        result = cv2.matchTemplate(warped, ir, cv2.TM_CCOEFF_NORMED)
    result = np.nan_to_num(result, nan=-1.0, posinf=-1.0, neginf=-1.0)
    _, score, _, (px, py) = cv2.minMaxLoc(result)
    shift = (int(px) - m, int(py) - m)
    linear = homography[:2, :2] / homography[2, 2]
    if inliers < settings.min_inliers:
        reason = f"only {inliers} consistent feature matches (< {settings.min_inliers})"
    elif np.linalg.det(linear) <= 0:
        reason = "mirrored mapping (is one image flipped?)"
    elif score < settings.min_score:
        reason = f"match score {score:.3f} < {settings.min_score}"
    elif max(abs(shift[0]), abs(shift[1])) > _MAX_SHIFT:
        reason = f"correlation peak {shift} px away from the homography's placement"
    elif coverage < settings.min_coverage:
        reason = f"ir/ reaches outside ir_full (coverage {coverage:.3f} < {settings.min_coverage})"
    else:
        reason = None
    return Registration(homography, float(score), shift, inliers, coverage, reason, crop_score)


def map_boxes(
    boxes: Sequence[tuple[str, float, float, float, float]],
    homography: np.ndarray,
    size: tuple[int, int],
    settings: PrepareSettings,
) -> tuple[list[tuple[int, np.ndarray]], Counter[str]]:
    """FLIR boxes -> [(class index in CLASSES, x0 y0 x1 y1 on the registered image)] and the
    dropped boxes by reason. Box coordinates are continuous (pixel i spans [i, i+1)); the
    homography maps pixel centres, hence the half-pixel shifts."""
    width, height = size
    half = np.array([[1.0, 0, 0.5], [0, 1.0, 0.5], [0, 0, 1.0]])
    continuous = half @ homography @ np.linalg.inv(half)
    kept: list[tuple[int, np.ndarray]] = []
    dropped: Counter[str] = Counter()
    for name, x, y, w, h in boxes:
        if name not in CLASSES:
            dropped[f"class {name} (not written)"] += 1
            continue
        if w <= 0 or h <= 0:
            dropped["empty source box"] += 1
            continue
        mids = np.array([[[x, y + h / 2], [x + w, y + h / 2], [x + w / 2, y], [x + w / 2, y + h]]])
        p = cv2.perspectiveTransform(mids, continuous)[0]
        x0, x1 = sorted((p[0, 0], p[1, 0]))
        y0, y1 = sorted((p[2, 1], p[3, 1]))
        area = (x1 - x0) * (y1 - y0)
        cx0, cy0 = min(max(x0, 0.0), width), min(max(y0, 0.0), height)
        cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
        visible = (cx1 - cx0) * (cy1 - cy0) / area if area > 0 else 0.0
        if visible < settings.min_visible or visible <= 0:
            dropped[f"less than {settings.min_visible:g} visible after clipping"] += 1
        elif min(cx1 - cx0, cy1 - cy0) < settings.min_size:
            dropped[f"smaller than {settings.min_size:g} px"] += 1
        else:
            kept.append((CLASSES.index(name), np.array([cx0, cy0, cx1, cy1])))
    return kept, dropped


def yolo_lines(boxes: Sequence[tuple[int, np.ndarray]], size: tuple[int, int]) -> list[str]:
    """``class cx cy w h`` normalised to [0, 1], one line per box."""
    width, height = size
    lines = []
    for label, (x0, y0, x1, y1) in boxes:
        values = (
            (x0 + x1) / 2 / width,
            (y0 + y1) / 2 / height,
            (x1 - x0) / width,
            (y1 - y0) / height,
        )
        lines.append(f"{label} " + " ".join(f"{v:.6f}" for v in values))
    return lines


def choose_val(stems: Sequence[str], fraction: float, seed: int) -> set[str]:
    """A seeded ``fraction`` (at least one, never all) of ``stems``, independent of their order."""
    ordered = sorted(stems)
    if len(ordered) < 2:
        return set()
    count = min(len(ordered) - 1, max(1, round(fraction * len(ordered))))
    chosen = np.random.default_rng(seed).permutation(len(ordered))[:count]
    return {ordered[i] for i in chosen}


# ----------------------------------------------------------------------------- output


def _pairs(root: Path) -> list[tuple[str, Path, Path]]:
    """(name, vis, ir) of a vis/ + ir/ source folder; an unpaired file is an error."""
    vis, ir = index_images(root / "vis"), index_images(root / "ir")
    for name in sorted(set(vis) ^ set(ir)):
        lone = vis.get(name) or ir[name]
        raise DatasetError(
            lone, f"has no partner named {name}.* in {root / ('ir' if name in vis else 'vis')}"
        )
    return [(name, vis[name], ir[name]) for name in sorted(vis)]


def _clear_output(out: Path, overwrite: bool) -> None:
    """A new or empty ``out``, or (with ``overwrite``) an earlier output of this tool, emptied."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: {out} exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise ValueError(
            f"--out: {out} is not empty; pass --overwrite to replace an earlier {TOOL} output"
        )
    try:
        ours = json.loads((out / SUMMARY).read_text()).get("tool") == TOOL
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise ValueError(
            f"--overwrite: {out} has no {SUMMARY} written by {TOOL}; refusing to empty it"
        )
    (out / MANIFEST).unlink(missing_ok=True)  # first: without it the folder is no dataset
    for name in ("rgb", "thermal", "labels"):
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    for name in (*SPLIT_FILES.values(), SUMMARY, FIGURE):
        (out / name).unlink(missing_ok=True)


def _write_image(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image):
        raise DatasetError(path, "OpenCV could not write the image")


def _grey_of(path: Path) -> np.ndarray:
    """A grey source stored as 1 or 3 channels -> HxW uint8 (luma when channels differ)."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.dtype != np.uint8:
        raise DatasetError(path, "unreadable or not an 8-bit image")
    if image.ndim == 3:
        image = image[:, :, :3]
        same = np.array_equal(image[:, :, 0], image[:, :, 1]) and np.array_equal(
            image[:, :, 0], image[:, :, 2]
        )
        image = image[:, :, 0] if same else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return np.ascontiguousarray(image)


def _check_same_size(rgb: Path, thermal: Path, a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[:2] != b.shape[:2]:
        raise DatasetError(
            thermal,
            f"size {b.shape[1]}x{b.shape[0]} differs from {rgb.name} ({a.shape[1]}x{a.shape[0]})",
        )


def _stats(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values, np.float64)
    points = {"min": 0, "p5": 5, "median": 50, "p95": 95, "max": 100}
    return {k: round(float(np.percentile(array, q)), 4) for k, q in points.items()}


def prepare_real_pairs(
    data_root: str | Path,
    out: str | Path,
    settings: PrepareSettings | None = None,
    *,
    figure: str | Path | bool | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the dataset (see the module docstring) and return its summary (also summary.json).

    figure: a path, None for ``<out>/mapped_boxes.png``, or False for none.
    """
    settings = settings if settings is not None else PrepareSettings()
    data_root, out = Path(data_root), Path(out)
    roadscene, tno = data_root / "roadscene", data_root / "tno"
    for folder in (roadscene, tno):
        if not folder.is_dir():
            raise FileNotFoundError(
                f"--data-root: {folder} not found (set --data-root or ${ENV_VAR} to the folder "
                "holding roadscene/ and tno/)"
            )
    road_pairs, tno_pairs = _pairs(roadscene), _pairs(tno)
    frames = read_flir_boxes(roadscene / "flir_boxes")
    _clear_output(out, overwrite)
    dirs = {name: out / name for name in ("rgb", "thermal", "labels")}
    for folder in dirs.values():
        folder.mkdir(parents=True, exist_ok=True)

    sift = cv2.SIFT_create()
    kept_boxes: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    per_pair: dict[str, dict[str, Any]] = {}
    labelled: list[str] = []
    examples: dict[str, list[tuple[int, np.ndarray]]] = {}
    source_boxes = 0
    for name, vis_path, ir_path in tqdm(road_pairs, desc="roadscene", disable=not progress):
        stem = f"roadscene_{name}"
        ir = _grey(ir_path)
        vis = cv2.imread(str(vis_path), cv2.IMREAD_UNCHANGED)
        if vis is None:
            raise DatasetError(vis_path, "unreadable image (OpenCV could not decode it)")
        _check_same_size(vis_path, ir_path, vis, ir)
        if vis.ndim == 3 and vis.shape[2] == 3 and vis_path.suffix.lower() in (".jpg", ".jpeg"):
            shutil.copyfile(vis_path, dirs["rgb"] / f"{stem}.jpg")  # no second JPEG loss
        else:
            grey = vis if vis.ndim == 2 else None
            _write_image(
                dirs["rgb"] / f"{stem}.png", cv2.merge([grey] * 3) if grey is not None else vis
            )
        _write_image(dirs["thermal"] / f"{stem}.png", ir)
        frame = frames.get(name)
        if frame is None:
            continue
        source_boxes += len(frame.boxes)
        full_path = next((p for p in sorted((roadscene / "ir_full").glob(f"{name}.*"))), None)
        if full_path is None:
            registration = Registration(None, float("nan"), None, 0, 0.0, "no ir_full frame")
        else:
            registration = register(ir, _grey(full_path), settings, sift)
        entry: dict[str, Any] = {
            "score": None if np.isnan(registration.score) else round(registration.score, 4),
            "inliers": registration.inliers,
            "coverage": round(registration.coverage, 4),
            "shift": registration.shift,
            "accepted": registration.accepted,
            "reason": registration.reason,
            "crop_score": None
            if np.isnan(registration.crop_score)
            else round(registration.crop_score, 4),
        }
        if not registration.accepted:
            classes = Counter(b[0] for b in frame.boxes)
            for cls, n in classes.items():
                key = (
                    "pair rejected (registration)"
                    if cls in CLASSES
                    else f"class {cls} (not written)"
                )
                dropped[key] += n
            per_pair[stem] = entry
            continue
        size = (ir.shape[1], ir.shape[0])
        boxes, lost = map_boxes(frame.boxes, registration.homography, size, settings)
        (dirs["labels"] / f"{stem}.txt").write_text(
            "".join(f"{line}\n" for line in yolo_lines(boxes, size))
        )
        labelled.append(stem)
        examples[stem] = boxes
        dropped.update(lost)
        kept_boxes.update(CLASSES[label] for label, _ in boxes)
        entry.update(
            boxes_kept=len(boxes),
            boxes_dropped=dict(lost),
            homography=np.round(registration.homography, 6).tolist(),
        )
        per_pair[stem] = entry

    for name, vis_path, ir_path in tqdm(tno_pairs, desc="tno", disable=not progress):
        stem = f"tno_{name}"
        vis, ir = _grey_of(vis_path), _grey_of(ir_path)
        _check_same_size(vis_path, ir_path, vis, ir)
        _write_image(dirs["rgb"] / f"{stem}.png", cv2.merge([vis, vis, vis]))
        _write_image(dirs["thermal"] / f"{stem}.png", ir)

    stems = [f"roadscene_{n}" for n, _, _ in road_pairs] + [f"tno_{n}" for n, _, _ in tno_pairs]
    val = choose_val(labelled, settings.val_fraction, settings.seed)
    splits = {"train": [s for s in stems if s not in val], "val": sorted(val)}
    for split, file_name in SPLIT_FILES.items():
        (out / file_name).write_text("".join(f"{s}\n" for s in splits[split]))

    rejected = {s: e for s, e in per_pair.items() if not e["accepted"]}
    scores = [e["score"] for e in per_pair.values() if e["score"] is not None]
    summary: dict[str, Any] = {
        "tool": TOOL,
        "data_root": str(data_root.resolve()),
        "settings": asdict(settings),
        "classes": list(CLASSES),
        "registration": {
            "method": "SIFT + RANSAC homography ir_full -> ir, verified by cv2.matchTemplate "
            f"(TM_CCOEFF_NORMED, +-{_SEARCH_MARGIN} px)",
            "annotated_frames": len(per_pair),
            "matched": len(per_pair) - len(rejected),
            "rejected": {
                s: {"reason": e["reason"], "score": e["score"]} for s, e in rejected.items()
            },
            "score": _stats(scores),
            "same_scale_crop_score": _stats(
                [e["crop_score"] for e in per_pair.values() if e["crop_score"] is not None]
            ),
        },
        "pairs": {
            "roadscene": len(road_pairs),
            "roadscene_labelled": len(labelled),
            "roadscene_unlabelled": len(road_pairs) - len(labelled),
            "tno_unlabelled": len(tno_pairs),
            "train": len(splits["train"]),
            "val": len(splits["val"]),
        },
        "boxes": {
            "source": source_boxes,
            "kept": {c: kept_boxes[c] for c in CLASSES},
            "kept_total": sum(kept_boxes.values()),
            "dropped": dict(sorted(dropped.items())),
        },
        "per_pair": per_pair,
    }
    figure_path = None
    if figure is not False and settings.figure_pairs > 0:
        figure_path = Path(figure) if figure not in (None, True) else out / FIGURE
        draw_figure(figure_path, out, examples, rejected, settings.figure_pairs)
    summary["figure"] = None if figure_path is None else str(figure_path)
    (out / SUMMARY).write_text(json.dumps(summary, indent=1))
    manifest = {
        "classes": list(CLASSES),
        "label_format": "yolo",
        "unlabelled": "fusion_only",
        "splits": dict(SPLIT_FILES),
        "format_version": 1,
        "description": (
            f"RoadScene + TNO real pairs by {TOOL}: person/car boxes from FLIR mapped onto "
            "RoadScene (labels/); pairs without a label file are fusion-only. See summary.json."
        ),
    }
    (out / MANIFEST).write_text(yaml.safe_dump(manifest, sort_keys=False))
    return summary


# ----------------------------------------------------------------------------- report


_COLOURS = {0: (255, 64, 64), 1: (0, 200, 255)}  # RGB per class index


def _annotated(image: np.ndarray, boxes: Sequence[tuple[int, np.ndarray]]) -> np.ndarray:
    canvas = image.copy()
    for label, (x0, y0, x1, y1) in boxes:
        colour = _COLOURS.get(label, (255, 255, 0))
        cv2.rectangle(canvas, (round(x0), round(y0)), (round(x1) - 1, round(y1) - 1), colour, 2)
        cv2.putText(
            canvas,
            CLASSES[label],
            (round(x0), max(8, round(y0) - 2)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4,
            colour,
            1,
            cv2.LINE_AA,
        )
    return canvas


def draw_figure(
    path: Path,
    out: Path,
    examples: Mapping[str, Sequence[tuple[int, np.ndarray]]],
    rejected: Mapping[str, Mapping[str, Any]],
    count: int,
) -> None:
    """A grid of ``count`` labelled pairs (thermal | visible, mapped boxes drawn), evenly spread
    over the sorted labelled stems, with the rejected pairs listed under it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    stems = sorted(s for s, b in examples.items() if b) or sorted(examples)
    if stems:
        picks = np.unique(
            np.linspace(0, len(stems) - 1, min(count, len(stems))).round().astype(int)
        )
        stems = [stems[i] for i in picks]
    columns = 3
    rows = max(1, -(-len(stems) // columns))
    figure = Figure(figsize=(6 * columns, 2.3 * rows + 0.4 + 0.18 * len(rejected)))
    FigureCanvasAgg(figure)
    for i, stem in enumerate(stems):
        rgb = cv2.cvtColor(
            cv2.imread(str(next((out / "rgb").glob(f"{stem}.*")))), cv2.COLOR_BGR2RGB
        )
        thermal = cv2.cvtColor(cv2.imread(str(out / "thermal" / f"{stem}.png")), cv2.COLOR_BGR2RGB)
        pair = np.hstack([_annotated(thermal, examples[stem]), _annotated(rgb, examples[stem])])
        axes = figure.add_subplot(rows, columns, i + 1)
        axes.imshow(pair)
        axes.set_title(f"{stem}: {len(examples[stem])} box(es)  (thermal | visible)", fontsize=8)
        axes.axis("off")
    lines = [f"rejected (kept unlabelled): {len(rejected)}"]
    lines += [f"  {s}: {e['reason']}" for s, e in sorted(rejected.items())]
    figure.text(0.01, 0.005, "\n".join(lines), fontsize=8, family="monospace", va="bottom")
    figure.suptitle("FLIR boxes mapped onto RoadScene (person red, car blue)", fontsize=10)
    figure.tight_layout(rect=(0, 0.02 + 0.012 * len(rejected), 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def format_summary(summary: Mapping[str, Any]) -> str:
    """The summary as a few lines for the terminal."""
    reg, pairs, boxes = summary["registration"], summary["pairs"], summary["boxes"]
    score = ", ".join(f"{k} {v}" for k, v in reg["score"].items()) or "-"
    lines = [
        f"registration: {reg['matched']}/{reg['annotated_frames']} annotated RoadScene frames matched "
        f"(min score {summary['settings']['min_score']}); scores: {score}",
    ]
    crop = ", ".join(f"{k} {v}" for k, v in reg["same_scale_crop_score"].items()) or "-"
    lines.append(f"  (a same-scale crop, as RoadScene's README assumes, would score: {crop})")
    lines += [f"  rejected {s}: {e['reason']}" for s, e in reg["rejected"].items()]
    lines.append(
        f"pairs: {pairs['roadscene_labelled']} labelled + {pairs['roadscene_unlabelled']} unlabelled "
        f"RoadScene, {pairs['tno_unlabelled']} unlabelled TNO; train {pairs['train']}, val {pairs['val']} "
        "(val: labelled only)"
    )
    kept = ", ".join(f"{k} {v}" for k, v in boxes["kept"].items())
    lines.append(f"boxes: {boxes['source']} in FLIR, kept {boxes['kept_total']} ({kept})")
    lines += [f"  dropped {n}: {reason}" for reason, n in boxes["dropped"].items()]
    if summary.get("figure"):
        lines.append(f"figure: {summary['figure']}")
    return "\n".join(lines)
