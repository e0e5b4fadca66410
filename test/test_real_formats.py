"""The loaders and fusion-eval on real files of M3FD, LLVIP and DroneVehicle as the datasets ship them.

The files are small samples in ``$FUSION_SHARED_DATA/realfmt`` (else ``../shared/data/realfmt``
beside the repository; see its README.md for where each came from). Tests copy them into dataset
folders under tmp_path, the way each release lays them out; nothing is copied into the repository.
Where a quirk's real file is not public (DroneVehicle's ``*`` class in train ``13099.xml``, the
truncated ``trainimg/09012.jpg``), the test applies that defect to a real file.
"""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
import shapely
from fusion_training.cli.eval import main as eval_main
from fusion_training.datasets import LLVIP, M3FD, DatasetError, DroneVehicle
from fusion_training.datasets.m3fd import TARDAL_CLASSES

from fusion_perception.cli.common import run_cli
from fusion_perception.cli.init import main as fusion_init

REPO = Path(__file__).resolve().parents[1]
REALFMT = Path(os.environ.get("FUSION_SHARED_DATA") or REPO.parent / "shared" / "data") / "realfmt"
DRONE_FILES = ("trainimgr_00001.jpg", "trainlabelr_00001_first_object.xml", "testlabel_00001.xml")
LLVIP_STEMS = ("010002", "010003", "010004")
BORDER = 100


def _need(*relative: str) -> Path:
    """The realfmt folder, or a skip naming what is missing."""
    missing = [r for r in relative if not (REALFMT / r).exists()]
    if missing:
        pytest.skip(
            f"real dataset samples not found: {[str(REALFMT / m) for m in missing]} (set "
            "FUSION_SHARED_DATA to the folder holding realfmt/)"
        )
    return REALFMT


def _copy(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def _polygon(xml: Path) -> np.ndarray:
    """The first object's <polygon> x1..y4 as [4, 2]."""
    polygon = ET.parse(xml).getroot().find("object/polygon")
    return np.array(
        [float(polygon.findtext(t)) for t in ("x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4")]
    ).reshape(4, 2)


def _box_polygon(box: np.ndarray) -> shapely.Polygon:
    cx, cy, w, h, a = (float(v) for v in box)
    ex, ey = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
    corners = [
        np.array([cx, cy]) + sx * ex * w / 2 + sy * ey * h / 2
        for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))
    ]
    return shapely.Polygon(corners)


# ------------------------------------------------------------------ DroneVehicle


def _drone_train(tmp_path: Path) -> Path:
    """train/ with the real infrared image 00001 and its real first label object. The RGB image
    of 00001 is not public: the infrared file stands in as its partner (same size, 840x712)."""
    real = _need(*(f"dronevehicle/{name}" for name in DRONE_FILES)) / "dronevehicle"
    train = tmp_path / "DroneVehicle" / "train"
    for folder in ("trainimg", "trainimgr"):
        _copy(real / "trainimgr_00001.jpg", train / folder / "00001.jpg")
    for folder in ("trainlabel", "trainlabelr"):
        _copy(real / "trainlabelr_00001_first_object.xml", train / folder / "00001.xml")
    return train


def test_dronevehicle_real_label_and_image_with_border_removed(tmp_path: Path) -> None:
    train = _drone_train(tmp_path)
    raw = cv2.imread(str(train / "trainimgr" / "00001.jpg"), cv2.IMREAD_GRAYSCALE)
    assert raw.shape == (712, 840)
    ring = np.concatenate([raw[:BORDER].ravel(), raw[-BORDER:].ravel(), raw[:, :BORDER].ravel()])
    assert ring.mean() > 254.5  # the real white border
    ds = DroneVehicle(train.parent)
    item = ds[0]
    assert item["rgb"].shape == (512, 640, 3) and item["thermal"].shape == (512, 640)
    np.testing.assert_array_equal(
        np.round(item["thermal"] * 255).astype(np.uint8), raw[BORDER:-BORDER, BORDER:-BORDER]
    )
    assert item["labels"].tolist() == [DroneVehicle.CLASSES.index("car")]
    assert item["difficult"].tolist() == [False] and dict(ds.dropped_objects) == {}
    quoted = _polygon(train / "trainlabelr" / "00001.xml") - BORDER
    car = shapely.Polygon(quoted)
    box = _box_polygon(item["boxes"][0])
    assert box.contains(car.buffer(-1e-3)) and box.area <= car.area * 1.15  # a tight oriented box
    assert item["boxes"][0, 2] > 2 * item["boxes"][0, 3]  # the car is long and thin (~62 x 22)


def test_dronevehicle_star_class_drops_the_object_and_keeps_the_image(tmp_path: Path) -> None:
    train = _drone_train(tmp_path)
    label = train / "trainlabelr" / "00001.xml"
    tree = ET.parse(label)
    star = ET.fromstring(ET.tostring(tree.getroot().find("object")))
    star.find("name").text = "*"  # the name the released labels use, e.g. in train 13099.xml
    tree.getroot().append(star)
    tree.write(label)
    ds = DroneVehicle(train.parent)
    assert len(ds) == 1 and ds[0]["labels"].tolist() == [DroneVehicle.CLASSES.index("car")]
    assert ds.dropped_objects == {"unknown class '*'": 1} and not ds.skipped


def test_dronevehicle_truncated_jpeg_is_reported_not_read_as_grey(tmp_path: Path) -> None:
    train = _drone_train(tmp_path)
    for folder in ("trainimg", "trainlabel", "trainlabelr"):
        source = next((train / folder).iterdir())
        _copy(source, train / folder / f"00002{source.suffix}")
    data = (train / "trainimgr" / "00001.jpg").read_bytes()
    cut = train / "trainimgr" / "00002.jpg"
    cut.write_bytes(data[: int(len(data) * 0.6)])  # as an interrupted download leaves it
    # the quirk: OpenCV decodes it with a warning only, the missing rows a flat grey
    grey = cv2.imread(str(cut), cv2.IMREAD_GRAYSCALE)
    assert grey.shape == (712, 840) and np.ptp(grey[-50:]) == 0
    with pytest.raises(DatasetError, match=r"truncated image: no end-of-image marker") as info:
        DroneVehicle(train.parent)
    assert info.value.path == cut and "00002.jpg" in str(info.value)
    ds = DroneVehicle(train.parent, skip_invalid=True)
    assert [r.image_id for r in ds.records] == ["00001"]
    assert [(s.image_id, s.path) for s in ds.skipped] == [("00002", cut)]
    assert "truncated" in ds.skip_summary()


def test_dronevehicle_real_test_label_file(tmp_path: Path) -> None:
    real = _need(*(f"dronevehicle/{name}" for name in DRONE_FILES)) / "dronevehicle"
    test = tmp_path / "DroneVehicle" / "test"
    for folder in ("testimg", "testimgr"):  # the matching image is not public: any 840x712 one
        _copy(real / "trainimgr_00001.jpg", test / folder / "00001.jpg")
    label = _copy(real / "testlabel_00001.xml", test / "testlabel" / "00001.xml")
    ds = DroneVehicle(
        test.parent, split="test", labels="rgb"
    )  # Windows <path>, <filename> DJI_0458
    item = ds[0]
    assert item["labels"].tolist() == [0] and item["difficult"].tolist() == [False]
    car = shapely.Polygon(_polygon(label) - BORDER)
    assert _box_polygon(item["boxes"][0]).contains(car.buffer(-1e-3))
    with pytest.raises(DatasetError, match="no sub-folder named testlabelr"):
        DroneVehicle(test.parent, split="test")  # the infrared labels are a separate folder


# ------------------------------------------------------------------ M3FD


def _m3fd_voc(folder: Path) -> dict:
    """Vis/, Ir/, Annotation/ of scene 00390 from the real pair and the COCO excerpt of its XML
    (inverse of voc2coco: xmin = x + 1, xmax = xmin + w)."""
    real = _need("m3fd/Vis_00471.png", "m3fd/Ir_00471.png", "m3fd/coco_excerpt_00390.json") / "m3fd"
    coco = json.loads((real / "coco_excerpt_00390.json").read_text())
    _copy(real / "Vis_00471.png", folder / "Vis" / "00390.png")
    _copy(real / "Ir_00471.png", folder / "Ir" / "00390.png")
    names = {c["id"]: c["name"] for c in coco["categories"]}
    objects = "".join(
        f"<object><name>{names[a['category_id']]}</name><difficult>0</difficult><bndbox>"
        f"<xmin>{x + 1}</xmin><ymin>{y + 1}</ymin><xmax>{x + 1 + w}</xmax><ymax>{y + 1 + h}</ymax>"
        "</bndbox></object>"
        for a in coco["annotations"]
        for x, y, w, h in [a["bbox"]]
    )
    (folder / "Annotation").mkdir(parents=True)
    (folder / "Annotation" / "00390.xml").write_text(
        "<annotation><filename>00390.png</filename><size><width>1024</width>"
        f"<height>768</height><depth>3</depth></size>{objects}</annotation>"
    )
    return coco


def test_m3fd_release_folder_above_m3fd_detection(tmp_path: Path) -> None:
    release = tmp_path / "M3FD"
    coco = _m3fd_voc(release / "M3FD_Detection")
    for folder in ("Vis", "Ir"):  # the fusion-only half of the release: pairs, no labels
        _copy(
            release / "M3FD_Detection" / folder / "00390.png",
            release / "M3FD_Fusion" / folder / "00390.png",
        )
    ds = M3FD(release)
    assert ds.folder == release / "M3FD_Detection" and len(ds) == 1
    item = ds[0]
    assert item["rgb"].shape == (768, 1024, 3) and item["thermal"].shape == (768, 1024)
    names = [ds.class_names[i] for i in item["labels"]]
    assert names.count("People") == 10 and names.count("Car") == 1 and names.count("Lamp") == 2
    x, y, w, h = coco["annotations"][0]["bbox"]
    np.testing.assert_allclose(item["boxes"][0], [x + 1 + w / 2, y + 1 + h / 2, w, h, 0])
    with pytest.raises(DatasetError, match="M3FD_Fusion/ pairs carry no labels") as info:
        M3FD(release / "M3FD_Fusion")
    assert info.value.path == release / "M3FD_Fusion"


def test_m3fd_tardal_layout_gives_the_same_boxes(tmp_path: Path) -> None:
    _m3fd_voc(tmp_path / "voc")
    voc = M3FD(tmp_path / "voc")
    tardal = tmp_path / "tardal"
    _copy(tmp_path / "voc" / "Vis" / "00390.png", tardal / "vi" / "00390.png")
    _copy(tmp_path / "voc" / "Ir" / "00390.png", tardal / "ir" / "00390.png")
    item = voc[0]
    lines = [
        f"{TARDAL_CLASSES.index(voc.class_names[label])} {cx / 1024} {cy / 768} {w / 1024} {h / 768}"
        for (cx, cy, w, h, _), label in zip(item["boxes"], item["labels"], strict=True)
    ]
    (tardal / "labels").mkdir()
    (tardal / "labels" / "00390.txt").write_text("\n".join(lines) + "\n")
    (tardal / "meta").mkdir()
    (tardal / "meta" / "train.txt").write_text("00390.png\n")
    ds = M3FD(tardal, split_file=tardal / "meta" / "train.txt")
    assert ds.layout == "tardal"
    np.testing.assert_allclose(ds[0]["boxes"], item["boxes"], atol=1e-3)
    assert ds[0]["labels"].tolist() == item["labels"].tolist()  # TarDAL's order mapped back


# ------------------------------------------------------------------ LLVIP


def _llvip(tmp_path: Path) -> Path:
    names = [
        f"llvip/images/{m}_train_{s}.jpg" for s in LLVIP_STEMS for m in ("visible", "infrared")
    ]
    real = _need(*names, *(f"llvip/Annotations/{s}.xml" for s in LLVIP_STEMS)) / "llvip"
    root = tmp_path / "LLVIP"
    for stem in LLVIP_STEMS:
        for modality in ("visible", "infrared"):
            _copy(
                real / "images" / f"{modality}_train_{stem}.jpg",
                root / modality / "train" / f"{stem}.jpg",
            )
        _copy(real / "Annotations" / f"{stem}.xml", root / "Annotations" / f"{stem}.xml")
    return root


def test_llvip_real_pairs_and_annotations(tmp_path: Path) -> None:
    root = _llvip(tmp_path)
    ds = LLVIP(root)
    assert [r.image_id for r in ds.records] == list(LLVIP_STEMS) and ds.class_names == ("person",)
    for index, stem in enumerate(LLVIP_STEMS):
        item = ds[index]
        assert item["rgb"].shape == (1024, 1280, 3) and item["thermal"].shape == (1024, 1280)
        xml = ET.parse(root / "Annotations" / f"{stem}.xml").getroot()
        corners = [
            [float(o.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax")]
            for o in xml.iter("object")
        ]
        x0, y0, x1, y1 = np.array(corners).T
        expected = np.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, 0 * x0], axis=1)
        np.testing.assert_allclose(item["boxes"], expected)
        assert item["labels"].tolist() == [0] * len(corners) and len(corners) > 0


# ------------------------------------------------------------------ fusion-eval on real formats


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Untrained nano checkpoints: one with M3FD's class names, one with LLVIP's, one rotated."""
    folder = tmp_path_factory.mktemp("checkpoints")
    specs = {
        "m3fd": ("nano.yaml", "People,Car,Bus,Motorcycle,Lamp,Truck"),
        "llvip": ("nano.yaml", "person,car"),
        "drone": ("nano_obb.yaml", "car,truck,bus,van,freight_car"),
    }
    paths = {}
    for name, (config, classes) in specs.items():
        paths[name] = folder / f"{name}.pt"
        args = [str(REPO / "config" / "models" / config), str(paths[name]), "--classes", classes]
        assert fusion_init([*args, "--size", "160x128"]) == 0
    return paths


def test_eval_scores_an_m3fd_model_on_llvip_through_class_synonyms(
    tmp_path: Path, checkpoints: dict[str, Path]
) -> None:
    root = _llvip(tmp_path)
    out = tmp_path / "m.json"
    args = ["--checkpoint", str(checkpoints["m3fd"]), "--data", str(root), "--format", "llvip"]
    assert eval_main([*args, "--limit", "1", "--device", "cpu", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["meta"]["class_aliases"] == {"person": "People"}
    per_class = results["detection"]["per_class"]
    assert per_class["People"] is not None and per_class["Car"] is None  # LLVIP has no cars
    assert results["meta"]["objects"] == len(LLVIP(root)[0]["labels"])


def test_eval_dataset_flags_reach_the_loader(
    tmp_path: Path, checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    release = tmp_path / "M3FD"
    _m3fd_voc(release / "M3FD_Detection")
    (tmp_path / "split.txt").write_text("00390\n")
    out = tmp_path / "m.json"
    args = ["--checkpoint", str(checkpoints["llvip"]), "--data", str(release), "--format", "m3fd"]
    args += ["--classes", "People,Car", "--split-file", str(tmp_path / "split.txt")]
    assert eval_main([*args, "--skip-invalid", "--device", "cpu", "--out", str(out)]) == 0
    meta = json.loads(out.read_text())["meta"]
    assert meta["objects"] == 11 and meta["class_aliases"] == {"People": "person"}
    assert meta["dataset_options"]["classes"] == ["People", "Car"]
    assert meta["dataset_options"]["skip_invalid"] is True

    def error(*argv: str) -> str:
        assert run_cli("fusion-eval", eval_main, [*argv, "--out", str(out)]) == 2
        return capsys.readouterr().err

    llvip = ["--checkpoint", str(checkpoints["m3fd"]), "--data", str(release), "--format", "llvip"]
    assert "--labels: not an option of --format llvip (it takes --skip-invalid)" in error(
        *llvip, "--labels", "rgb"
    )
    lamps = ["--checkpoint", str(checkpoints["llvip"]), "--data", str(release), "--format", "m3fd"]
    assert "class 'Lamp' matches none of the checkpoint's classes" in error(
        *lamps, "--classes", "Lamp"
    )
    assert "--ap-interpolation: only for rotated checkpoints" in error(
        *lamps, "--ap-interpolation", "11-point"
    )


def test_eval_rotated_on_real_dronevehicle_with_voc07_and_rgb_labels(
    tmp_path: Path, checkpoints: dict[str, Path]
) -> None:
    train = _drone_train(tmp_path)
    out = tmp_path / "m.json"
    args = ["--checkpoint", str(checkpoints["drone"]), "--data", str(train.parent)]
    args += ["--format", "dronevehicle", "--split", "train", "--labels", "rgb"]
    assert (
        eval_main([*args, "--ap-interpolation", "11-point", "--device", "cpu", "--out", str(out)])
        == 0
    )
    results = json.loads(out.read_text())
    assert results["meta"]["ap_interpolation"] == "11-point" and results["meta"]["rotated"]
    assert results["meta"]["dataset_options"] == {"labels": "rgb"}
    assert results["meta"]["objects"] == 1 and "AP50" in results["detection"]
    kept = tmp_path / "kept.json"
    assert eval_main([*args, "--keep-border", "--device", "cpu", "--out", str(kept)]) == 0
    assert json.loads(kept.read_text())["meta"]["dataset_options"] == {
        "labels": "rgb",
        "remove_border": False,
    }
