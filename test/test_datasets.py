"""Dataset loaders on small fixtures written the way each real dataset stores its files."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import shapely
import torch
import yaml
from fusion_training.augment import AugmentConfig, PairedAugment, check_item
from fusion_training.datasets import (
    LLVIP,
    M3FD,
    DatasetError,
    DroneVehicle,
    MixtureDataset,
    PairedFolder,
    SyntheticDataset,
    build_dataset,
    collate,
)
from fusion_training.datasets.base import match_class_names
from fusion_training.datasets.thermal import build_normalizer
from torch.utils.data import DataLoader

from fusion_perception import image_files

W, H = 64, 48
BORDER = 100


# ------------------------------------------------------------------ fixture writers


def _write_rgb(path: Path, width: int = W, height: int = H, seed: int = 0) -> np.ndarray:
    """Random colour image with a pure red block at (2..6, 2..6); returns it in RGB order."""
    rgb = np.random.default_rng(seed).integers(0, 200, (height, width, 3), dtype=np.uint8)
    rgb[2:6, 2:6] = (255, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return rgb


def _write_ir(path: Path, width: int = W, height: int = H, value: int = 128) -> None:
    """Infrared stored as a 3-channel grey image (M3FD's '24-bit grayscale', LLVIP's jpg)."""
    grey = np.full((height, width), value, np.uint8)
    grey[10:20, 10:20] = 250
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))


def _voc_xml(
    path: Path, filename: str, objects: list[tuple[str, tuple[float, ...]]], size=(W, H)
) -> None:
    """labelImg-style Pascal VOC annotation."""
    body = "".join(
        f"\t<object>\n\t\t<name>{name}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
        f"\t\t<difficult>0</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{b[0]}</xmin>\n\t\t\t<ymin>{b[1]}</ymin>\n"
        f"\t\t\t<xmax>{b[2]}</xmax>\n\t\t\t<ymax>{b[3]}</ymax>\n\t\t</bndbox>\n\t</object>\n"
        for name, b in objects
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<annotation>\n\t<folder>Vis</folder>\n\t<filename>{filename}</filename>\n"
        f"\t<size>\n\t\t<width>{size[0]}</width>\n\t\t<height>{size[1]}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
        f"\t<segmented>0</segmented>\n{body}</annotation>\n"
    )


M3FD_LABELS = {
    "00000": [("People", (10, 5, 20, 30)), ("Car", (30, 20, 60, 40))],
    "00001": [
        ("Lamp", (1, 1, 5, 20)),
        ("Truck", (20, 10, 64, 48)),
        ("Motorcycle", (5, 30, 15, 45)),
    ],
    "00002": [("Bus", (0, 0, 30, 25))],
    "00003": [],
}


def _m3fd(root: Path, labels=M3FD_LABELS) -> Path:
    for i, (stem, objects) in enumerate(labels.items()):
        _write_rgb(root / "Vis" / f"{stem}.png", seed=i)
        _write_ir(root / "Ir" / f"{stem}.png")
        _voc_xml(root / "Annotation" / f"{stem}.xml", f"{stem}.png", objects)
    return root


def _drone_xml(path: Path, objects: list[tuple[str, list[float] | None, str]]) -> None:
    """DroneVehicle annotation: <polygon> x1..y4 (or <bndbox>, or no geometry) per object."""
    parts = []
    for name, coords, kind in objects:
        if kind == "polygon":
            inner = "".join(
                f"<{t}>{int(v)}</{t}>"
                for t, v in zip(
                    ("x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4"), coords, strict=True
                )
            )
            geometry = f"<polygon>{inner}</polygon>"
        elif kind == "bndbox":
            inner = "".join(
                f"<{t}>{int(v)}</{t}>"
                for t, v in zip(("xmin", "ymin", "xmax", "ymax"), coords, strict=True)
            )
            geometry = f"<bndbox>{inner}</bndbox>"
        else:
            geometry = "<point><x>150</x><y>150</y></point>"
        parts.append(
            f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>0</difficult>{geometry}</object>"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    raw_w, raw_h = W + 2 * BORDER, H + 2 * BORDER
    path.write_text(
        f"<annotation><filename>{path.stem}.jpg</filename><source><database>DroneVehicle</database></source>"
        f"<size><width>{raw_w}</width><height>{raw_h}</height><depth>3</depth></size>{''.join(parts)}</annotation>"
    )


def _rect_polygon(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _drone(root: Path) -> Path:
    """Two train pairs, 264x248 with a white 100-px border around 64x48 content."""
    train = root / "train"
    for stem in ("00001", "00002"):
        for folder in ("trainimg", "trainimgr"):
            image = np.full((H + 2 * BORDER, W + 2 * BORDER, 3), 255, np.uint8)
            image[BORDER : BORDER + H, BORDER : BORDER + W] = 60
            image[BORDER, BORDER] = (0, 0, 200)  # first content pixel, BGR red
            (train / folder).mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(train / folder / f"{stem}.png"), image)
    tilted = [120, 125, 150, 135, 147, 144, 117, 134]  # a rotated quadrilateral in the content
    _drone_xml(
        train / "trainlabelr" / "00001.xml",
        [
            ("car", _rect_polygon(110, 120, 140, 130), "polygon"),
            ("feright car", tilted, "polygon"),
            ("feright_car", _rect_polygon(130, 110, 150, 120), "polygon"),
            ("feright", _rect_polygon(102, 102, 108, 108), "polygon"),
            ("truvk", [150, 130, 160, 140], "bndbox"),
            ("van", [5, 5, 40, 40], "bndbox"),  # entirely in the white border: dropped
            ("bus", None, "none"),  # no geometry: dropped
        ],
    )
    _drone_xml(
        train / "trainlabelr" / "00002.xml", [("bus", _rect_polygon(100, 100, 164, 148), "polygon")]
    )
    _drone_xml(
        train / "trainlabel" / "00001.xml", [("car", _rect_polygon(110, 120, 140, 130), "polygon")]
    )
    _drone_xml(train / "trainlabel" / "00002.xml", [])
    return root


def _folder(
    root: Path, label_format: str, labels: dict[str, str], thermal_16bit: bool = True, **manifest
) -> Path:
    manifest = {"classes": ["person", "car"], "label_format": label_format, **manifest}
    if thermal_16bit and "thermal_normalization" not in manifest:
        manifest["thermal_normalization"] = {
            "scheme": "fixed_range",
            "params": {"lo": 7000, "hi": 9000},
        }
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    for i, (stem, text) in enumerate(labels.items()):
        _write_rgb(root / "rgb" / f"{stem}.png", seed=i)
        if thermal_16bit:
            raw = np.full((H, W), 7000, np.uint16)
            raw[:, W // 2 :] = 9000
            raw[0, 0] = 8000
            (root / "thermal").mkdir(exist_ok=True)
            assert cv2.imwrite(str(root / "thermal" / f"{stem}.png"), raw)
        else:
            _write_ir(root / "thermal" / f"{stem}.png")
        (root / "labels").mkdir(exist_ok=True)
        (root / "labels" / f"{stem}.txt").write_text(text)
    return root


def _box_polygon(box: np.ndarray) -> shapely.Polygon:
    cx, cy, w, h, a = (float(v) for v in box)
    ex, ey = np.array([math.cos(a), math.sin(a)]), np.array([-math.sin(a), math.cos(a)])
    return shapely.Polygon(
        [
            np.array([cx, cy]) + sx * ex * w / 2 + sy * ey * h / 2
            for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))
        ]
    )


# ------------------------------------------------------------------ M3FD


def test_m3fd_loads_pairs_boxes_and_class_order(tmp_path: Path) -> None:
    ds = M3FD(_m3fd(tmp_path / "M3FD"))
    assert len(ds) == 4 and ds.class_names == M3FD.CLASSES and not ds.rotated
    item = ds[0]
    assert item["image_id"] == "00000"
    assert item["rgb"].shape == (H, W, 3) and item["rgb"].dtype == np.uint8
    assert tuple(item["rgb"][3, 3]) == (255, 0, 0)  # RGB order, not OpenCV's BGR
    assert item["thermal"].shape == (H, W) and item["thermal"].dtype == np.float32
    assert item["thermal"][15, 15] == pytest.approx(250 / 255) and item["thermal"][
        0, 0
    ] == pytest.approx(128 / 255)
    np.testing.assert_allclose(item["boxes"], [[15, 17.5, 10, 25, 0], [45, 30, 30, 20, 0]])
    assert item["labels"].tolist() == [0, 1] and item["labels"].dtype == np.int64
    assert ds[1]["labels"].tolist() == [4, 5, 3]  # Lamp, Truck, Motorcycle
    assert ds[3]["boxes"].shape == (0, 5)
    tardal = M3FD(
        tmp_path / "M3FD", classes=("People", "Car", "Bus", "Lamp", "Motorcycle", "Truck")
    )
    assert tardal[1]["labels"].tolist() == [3, 5, 4]
    subset = M3FD(tmp_path / "M3FD", classes=("people", "car"))  # names match case-insensitively
    assert [len(subset[i]["labels"]) for i in range(4)] == [2, 0, 0, 0]
    assert subset.dropped_objects["class not selected"] == 4
    with pytest.raises(ValueError, match="Tram"):
        M3FD(tmp_path / "M3FD", classes=("People", "Tram"))


def test_m3fd_splits_by_ratio_seed_and_file(tmp_path: Path) -> None:
    root = _m3fd(tmp_path / "M3FD", {f"{i:05d}": [("Car", (1, 1, 9, 9))] for i in range(10)})
    train = {r.image_id for r in M3FD(root, split="train", train_ratio=0.7, seed=3).records}
    val = {r.image_id for r in M3FD(root, split="val", train_ratio=0.7, seed=3).records}
    assert len(train) == 7 and len(val) == 3 and not train & val and len(train | val) == 10
    assert train == {r.image_id for r in M3FD(root, split="train", train_ratio=0.7, seed=3).records}
    assert train != {r.image_id for r in M3FD(root, split="train", train_ratio=0.7, seed=4).records}
    (root / "val.txt").write_text("# held out\n00002\n00007.png\n\n")
    assert [r.image_id for r in M3FD(root, split_file=root / "val.txt").records] == [
        "00002",
        "00007",
    ]
    (root / "bad.txt").write_text("00002\n00042\n")
    with pytest.raises(DatasetError, match=r"bad\.txt.*'00042'"):
        M3FD(root, split_file=root / "bad.txt")
    with pytest.raises(ValueError, match="split"):
        M3FD(root, split="test")


def _corrupt(root: Path, case: str, stem: str = "00001") -> Path:
    """Apply one defect to pair ``stem`` of an M3FD fixture; return the file the error must name."""
    xml = root / "Annotation" / f"{stem}.xml"
    if case == "missing annotation":
        xml.unlink()
        return xml
    if case == "unreadable image":
        (root / "Vis" / f"{stem}.png").write_bytes(b"not a png at all")
        return root / "Vis" / f"{stem}.png"
    if case == "box outside image":
        _voc_xml(xml, f"{stem}.png", [("Car", (30, 20, 90, 40))])
        return xml
    if case == "unpaired rgb":
        (root / "Ir" / f"{stem}.png").unlink()
        return root / "Vis" / f"{stem}.png"
    if case == "unpaired thermal":
        (root / "Vis" / f"{stem}.png").unlink()
        return root / "Ir" / f"{stem}.png"
    if case == "unknown class":
        _voc_xml(xml, f"{stem}.png", [("Tram", (1, 1, 9, 9))])
        return xml
    if case == "malformed xml":
        xml.write_text("<annotation><object>")
        return xml
    if case == "size mismatch":
        _write_ir(root / "Ir" / f"{stem}.png", width=32)
        return root / "Ir" / f"{stem}.png"
    assert case == "empty box"
    _voc_xml(xml, f"{stem}.png", [("Car", (30, 20, 30, 40))])
    return xml


CASES = {
    "missing annotation": "label file not found",
    "unreadable image": "unreadable image",
    "box outside image": "outside the 64x48 image",
    "unpaired rgb": "no thermal partner",
    "unpaired thermal": "no RGB partner",
    "unknown class": "unknown class 'Tram'",
    "malformed xml": "malformed XML",
    "size mismatch": "differs from its RGB partner",
    "empty box": "empty box",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_m3fd_errors_name_the_file(tmp_path: Path, case: str) -> None:
    root = _m3fd(tmp_path / "M3FD")
    bad = _corrupt(root, case)
    with pytest.raises(DatasetError, match=CASES[case]) as info:
        M3FD(root)
    assert info.value.path == bad and str(bad) in str(info.value)
    ds = M3FD(root, skip_invalid=True)
    assert [r.image_id for r in ds.records] == ["00000", "00002", "00003"]
    assert [(s.image_id, s.path) for s in ds.skipped] == [("00001", bad)]


def test_skip_invalid_reports_every_skipped_pair(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    labels = {f"{i:05d}": [("Car", (1, 1, 9, 9))] for i in range(len(CASES) + 2)}
    root = _m3fd(tmp_path / "M3FD", labels)
    bad = {
        f"{i + 1:05d}": _corrupt(root, case, f"{i + 1:05d}") for i, case in enumerate(sorted(CASES))
    }
    with caplog.at_level(logging.WARNING):
        ds = M3FD(root, skip_invalid=True)
    assert [r.image_id for r in ds.records] == ["00000", f"{len(CASES) + 1:05d}"]
    assert {s.image_id: s.path for s in ds.skipped} == bad
    summary = ds.skip_summary()
    assert f"skipped {len(CASES)} invalid pair(s), kept 2" in summary
    for stem, path in bad.items():
        assert f"{stem}: {path}" in summary
    assert summary in caplog.text
    for i in range(len(ds)):
        assert ds[i]["labels"].tolist() == [1]


def test_all_invalid_is_an_error_even_when_skipping(tmp_path: Path) -> None:
    root = _m3fd(tmp_path / "M3FD", {"00000": [("Car", (1, 1, 90, 9))]})
    with pytest.raises(DatasetError, match=r"no valid image pairs found \(1 skipped"):
        M3FD(root, skip_invalid=True)
    with pytest.raises(DatasetError, match="has no sub-folder named Vis"):
        M3FD(tmp_path)


def test_m3fd_release_folder_above_m3fd_detection_and_fusion_only_folders(tmp_path: Path) -> None:
    release = tmp_path / "M3FD"
    _m3fd(release / "M3FD_Detection")
    (release / "M3FD_Fusion" / "Vis").mkdir(parents=True)
    (release / "M3FD_Fusion" / "Ir").mkdir()
    ds = M3FD(release)
    assert len(ds) == 4 and ds.folder == release / "M3FD_Detection" and ds.layout == "m3fd"
    with pytest.raises(DatasetError, match=r"no Annotation/ folder.*M3FD_Detection") as info:
        M3FD(release / "M3FD_Fusion")
    assert info.value.path == release / "M3FD_Fusion"
    shutil.rmtree(release / "M3FD_Detection")
    with pytest.raises(DatasetError, match="pass the release's M3FD_Detection folder"):
        M3FD(release)


def test_m3fd_reads_tardal_prepared_layout(tmp_path: Path) -> None:
    root = tmp_path / "m3fd"
    for i, stem in enumerate(("00000", "00001")):
        _write_rgb(root / "vi" / f"{stem}.png", seed=i)
        _write_ir(root / "ir" / f"{stem}.png")
    (root / "labels").mkdir()
    # TarDAL's order: 0 People, 1 Car, 2 Bus, 3 Lamp, 4 Motorcycle, 5 Truck; cx cy w h / size
    (root / "labels" / "00000.txt").write_text("3 0.25 0.5 0.125 0.5\n4 0.5 0.5 0.25 0.25\n")
    (root / "labels" / "00001.txt").write_text("")
    (root / "meta").mkdir()
    (root / "meta" / "val.txt").write_text("00000.png\n")
    ds = M3FD(root)
    assert ds.layout == "tardal" and len(ds) == 2 and ds[1]["boxes"].shape == (0, 5)
    lamp, motorcycle = M3FD.CLASSES.index("Lamp"), M3FD.CLASSES.index("Motorcycle")
    assert ds[0]["labels"].tolist() == [lamp, motorcycle]
    np.testing.assert_allclose(ds[0]["boxes"], [[16, 24, 8, 24, 0], [32, 24, 16, 12, 0]])
    assert [r.image_id for r in M3FD(root, split_file=root / "meta" / "val.txt").records] == [
        "00000"
    ]
    lamps = M3FD(root, classes=("Lamp",))
    assert lamps[0]["labels"].tolist() == [0] and lamps.dropped_objects == {"class not selected": 1}
    (root / "labels" / "00001.txt").write_text("6 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DatasetError, match=r"class index '6'.*TarDAL") as info:
        M3FD(root)
    assert info.value.path == root / "labels" / "00001.txt"
    shutil.rmtree(root / "labels")
    with pytest.raises(DatasetError, match=r"TarDAL's prepared layout.*no labels/"):
        M3FD(root)


# ------------------------------------------------------------------ DroneVehicle


def test_dronevehicle_classes_border_removal_and_oriented_boxes(tmp_path: Path) -> None:
    ds = DroneVehicle(_drone(tmp_path / "DroneVehicle"), split="train")
    assert ds.rotated and ds.class_names == ("car", "truck", "bus", "van", "freight_car")
    assert len(ds) == 2
    item = ds[0]
    assert item["rgb"].shape == (H, W, 3) and item["thermal"].shape == (H, W)
    assert tuple(item["rgb"][0, 0]) == (200, 0, 0)  # first content pixel: the border is gone
    assert not (item["rgb"] == 255).all(axis=2).any()
    freight = DroneVehicle.CLASSES.index("freight_car")
    assert item["labels"].tolist() == [0, freight, freight, freight, 1]  # feright*, truvk -> truck
    assert ds.dropped_objects == {"mostly in the border": 1, "no polygon or bndbox": 1}
    boxes = item["boxes"]
    np.testing.assert_allclose(boxes[0], [125 - BORDER, 125 - BORDER, 30, 10, 0], atol=1e-4)
    np.testing.assert_allclose(boxes[2], [140 - BORDER, 115 - BORDER, 20, 10, 0], atol=1e-4)
    np.testing.assert_allclose(boxes[3], [105 - BORDER, 105 - BORDER, 6, 6, boxes[3, 4]], atol=1e-4)
    np.testing.assert_allclose(
        boxes[4], [155 - BORDER, 135 - BORDER, 10, 10, boxes[4, 4]], atol=1e-4
    )
    tilted = shapely.Polygon(np.reshape([120, 125, 150, 135, 147, 144, 117, 134], (4, 2)) - BORDER)
    oriented = _box_polygon(boxes[1])
    assert oriented.contains(tilted.buffer(-1e-3)) and oriented.area <= tilted.area * 1.15
    assert boxes[1, 2] >= boxes[1, 3] and 0.2 < boxes[1, 4] < 0.45  # tilted along its long side
    whole_image = ds[1]["boxes"]  # the 00002 bus covers exactly the content
    np.testing.assert_allclose(whole_image, [[W / 2, H / 2, W, H, 0]], atol=1e-4)


def test_dronevehicle_label_source_and_kept_border(tmp_path: Path) -> None:
    root = _drone(tmp_path / "DroneVehicle")
    rgb_labels = DroneVehicle(root, labels="rgb")
    assert [len(rgb_labels[i]["labels"]) for i in range(2)] == [1, 0]
    raw = DroneVehicle(root, remove_border=False)
    item = raw[0]
    assert item["rgb"].shape == (H + 2 * BORDER, W + 2 * BORDER, 3)
    np.testing.assert_allclose(item["boxes"][0], [125, 125, 30, 10, 0], atol=1e-4)
    assert len(item["labels"]) == 6  # the van in the border is kept when the border is
    with pytest.raises(ValueError, match="labels"):
        DroneVehicle(root, labels="thermal")


def test_dronevehicle_unknown_names_drop_the_object_not_the_image(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _drone(tmp_path / "DroneVehicle")
    label = root / "train" / "trainlabelr" / "00002.xml"
    _drone_xml(
        label,
        [
            ("*", _rect_polygon(110, 110, 120, 120), "polygon"),
            ("bus", _rect_polygon(120, 120, 150, 140), "polygon"),
            ("tank", None, "none"),  # an unknown name needs no valid geometry either
        ],
    )
    with caplog.at_level(logging.INFO):
        ds = DroneVehicle(root)
    assert len(ds) == 2 and ds[1]["labels"].tolist() == [DroneVehicle.CLASSES.index("bus")]
    assert ds.dropped_objects["unknown class '*'"] == 1
    assert ds.dropped_objects["unknown class 'tank'"] == 1
    assert "unknown class '*'" in caplog.text


def test_dronevehicle_logs_only_reasons_that_dropped_objects(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _drone(tmp_path / "DroneVehicle")
    with caplog.at_level(logging.INFO):
        ds = DroneVehicle(root, labels="rgb")  # nothing in the border, nothing left out
    assert dict(ds.dropped_objects) == {} and "objects left out" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        DroneVehicle(root, classes=("car",))
    assert "{'class not selected': 6, 'no polygon or bndbox': 1}" in caplog.text


def test_dronevehicle_difficult_flags_reach_the_items(tmp_path: Path) -> None:
    root = _drone(tmp_path / "DroneVehicle")
    label = root / "train" / "trainlabelr" / "00002.xml"
    _drone_xml(
        label,
        [
            ("car", _rect_polygon(110, 110, 130, 120), "polygon"),
            ("van", [5, 5, 40, 40], "bndbox"),  # in the border: dropped with its flag
            ("bus", _rect_polygon(120, 120, 150, 140), "polygon"),
        ],
    )
    text = label.read_text().replace("<difficult>0</difficult>", "<difficult>1</difficult>", 3)
    label.write_text(text.replace("<difficult>1</difficult>", "<difficult>0</difficult>", 1))
    ds = DroneVehicle(root)
    assert ds[1]["difficult"].tolist() == [False, True] and ds[0]["difficult"].dtype == bool
    assert len(ds[0]["difficult"]) == len(ds[0]["labels"])
    drop_last = DroneVehicle(root, transform=lambda item: {**item, "boxes": item["boxes"][:1]})
    assert "difficult" not in drop_last[1]  # misaligned flags are removed, not passed on
    label.write_text(text.replace("<difficult>1</difficult>", "<difficult>yes</difficult>", 1))
    with pytest.raises(DatasetError, match="<difficult> 'yes'") as info:
        DroneVehicle(root)
    assert info.value.path == label


def test_dronevehicle_errors_name_the_file(tmp_path: Path) -> None:
    root = _drone(tmp_path / "DroneVehicle")
    label = root / "train" / "trainlabelr" / "00002.xml"
    _drone_xml(label, [("car", _rect_polygon(110, 110, 300, 120), "polygon")])
    with pytest.raises(DatasetError, match="outside the 264x248 image"):
        DroneVehicle(root)
    ds = DroneVehicle(root, skip_invalid=True)
    assert len(ds) == 1 and ds.skipped[0].path == label
    (root / "train" / "trainimgr" / "00002.png").unlink()
    with pytest.raises(DatasetError, match="no thermal partner") as info:
        DroneVehicle(root)
    assert info.value.path == root / "train" / "trainimg" / "00002.png"


def test_truncated_images_are_refused_naming_the_file(tmp_path: Path) -> None:
    root = _m3fd(tmp_path / "M3FD")
    png = root / "Ir" / "00002.png"
    png.write_bytes(png.read_bytes()[:-40])  # cut inside the pixel data and IEND
    with pytest.raises(DatasetError, match="truncated image: no IEND chunk") as info:
        M3FD(root)
    assert info.value.path == png
    ds = M3FD(root, skip_invalid=True)
    assert [(s.image_id, s.path) for s in ds.skipped] == [("00002", png)]
    jpg = tmp_path / "padded.jpg"
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    data = cv2.imencode(".jpg", image)[1].tobytes()
    jpg.write_bytes(data + b"trailing bytes after the end marker")
    image_files.check_complete(jpg)  # data after FF D9 is accepted (a strict decode succeeds)
    jpg.write_bytes(data[: len(data) // 2] + bytes(1000))  # half written, zero-filled
    with pytest.raises(DatasetError, match="end-of-image marker"):
        image_files.read_rgb(jpg)


def test_class_synonyms_match_names_across_datasets() -> None:
    m3fd_model = ("People", "Car", "Bus", "Motorcycle", "Lamp", "Truck")
    assert match_class_names(["person"], m3fd_model) == {"person": "People"}
    assert match_class_names(["Pedestrian", "vehicle", "MotorBike"], m3fd_model) == {
        "Pedestrian": "People",
        "vehicle": "Car",
        "MotorBike": "Motorcycle",
    }
    assert match_class_names(["cyclist"], ("person", "bicycle")) == {"cyclist": "bicycle"}
    # an exact name wins over a synonym
    assert match_class_names(["people"], ("person", "people")) == {"people": "people"}
    with pytest.raises(ValueError, match="'person' matches several"):
        match_class_names(["person"], ("people", "pedestrian"))
    with pytest.raises(ValueError, match="'Lamp' matches none"):
        match_class_names(["Lamp"], ("person",))


# ------------------------------------------------------------------ LLVIP


def test_llvip_splits_and_person_class(tmp_path: Path) -> None:
    root = tmp_path / "LLVIP"
    for split, stems in (("train", ("010001", "010002")), ("test", ("190001",))):
        for i, stem in enumerate(stems):
            _write_rgb(root / "visible" / split / f"{stem}.jpg", seed=i)
            _write_ir(root / "infrared" / split / f"{stem}.jpg")
            _voc_xml(
                root / "Annotations" / f"{stem}.xml",
                f"{stem}.jpg",
                [("person", (4, 4, 20, 40))] * (i + 1),
            )
    train = LLVIP(root)
    assert [r.image_id for r in train.records] == ["010001", "010002"] and train.class_names == (
        "person",
    )
    assert train[1]["labels"].tolist() == [0, 0]
    np.testing.assert_allclose(train[0]["boxes"], [[12, 22, 16, 36, 0]])
    assert train[0]["thermal"].max() == pytest.approx(250 / 255, abs=0.02)  # jpeg, grey IR
    assert [r.image_id for r in LLVIP(root, split="test").records] == ["190001"]
    assert len(LLVIP(root, split="all")) == 3
    _voc_xml(root / "Annotations" / "190001.xml", "190001.jpg", [("car", (4, 4, 20, 40))])
    with pytest.raises(DatasetError, match="unknown class 'car'"):
        LLVIP(root, split="test")


# ------------------------------------------------------------------ paired folder


def test_folder_yolo_with_16bit_thermal_normalized_by_the_manifest(tmp_path: Path) -> None:
    root = _folder(
        tmp_path / "rec", "yolo", {"a": "0 0.5 0.5 0.25 0.5\n1 0.125 0.25 0.25 0.5\n", "b": ""}
    )
    ds = build_dataset("folder", root)
    assert isinstance(ds, PairedFolder) and ds.class_names == ("person", "car") and not ds.rotated
    item = ds[0]
    np.testing.assert_allclose(item["boxes"], [[32, 24, 16, 24, 0], [8, 12, 16, 24, 0]])
    assert item["labels"].tolist() == [0, 1]
    assert item["thermal"][5, 5] == 0.0 and item["thermal"][5, W - 1] == 1.0
    assert item["thermal"][0, 0] == pytest.approx(0.5)
    assert ds[1]["boxes"].shape == (0, 5)
    override = PairedFolder(
        root, thermal_normalization={"scheme": "fixed_range", "lo": 6000, "hi": 10000}
    )
    assert override[0]["thermal"][0, 0] == pytest.approx(0.5) and override[0]["thermal"][
        5, 5
    ] == pytest.approx(0.25)


def test_folder_dota_rotated_with_difficult_flags_and_splits(tmp_path: Path) -> None:
    text = "imagesource:GoogleEarth\ngsd:0.1\n10 10 30 10 30 20 10 20 car 0\n40 5 50 15 45 20 35 10 person 1\n"
    root = _folder(
        tmp_path / "rec",
        "dota",
        {"a": text, "b": "1 1 5 1 5 5 1 5 Car\n"},
        splits={"val": "val.txt"},
    )
    (root / "val.txt").write_text("b\n")
    ds = PairedFolder(root)
    assert ds.rotated and len(ds) == 2
    boxes = ds[0]["boxes"]
    assert ds[0]["labels"].tolist() == [1, 0]
    np.testing.assert_allclose(boxes[0], [20, 15, 20, 10, 0], atol=1e-5)
    diamond = shapely.Polygon([(40, 5), (50, 15), (45, 20), (35, 10)])
    assert _box_polygon(boxes[1]).symmetric_difference(diamond).area < 1e-3
    assert abs(abs(boxes[1, 4]) - math.pi / 4) < 1e-5
    easy = PairedFolder(root, include_difficult=False)
    assert easy[0]["labels"].tolist() == [1] and easy.dropped_objects["difficult"] == 1
    val = PairedFolder(root, split="val")
    assert [r.image_id for r in val.records] == ["b"] and val[0]["labels"].tolist() == [1]
    with pytest.raises(DatasetError, match="no split 'test'"):
        PairedFolder(root, split="test")


@pytest.mark.parametrize(
    ("label_format", "text", "message"),
    [
        ("yolo", "2 0.5 0.5 0.1 0.1\n", "class index '2'"),
        ("yolo", "0 0.9 0.5 0.5 0.1\n", "line 1 at .* lies outside the 64x48 image"),
        ("yolo", "0 0.5 0.5 0.1\n", "must be 'class cx cy w h'"),
        ("yolo", "0 0.5 nan 0.1 0.1\n", "non-finite"),
        ("yolo", "0 0.5 0.5 0 0.1\n", "empty box"),
        ("dota", "10 10 30 10 30 20 10 20 truck 0\n", "unknown class 'truck'"),
        ("dota", "10 10 30 10 30 20 10 20\n", "must be 'x1 y1"),
        ("dota", "10 10 90 10 90 20 10 20 car\n", "outside the 64x48 image"),
        ("dota", "10 10 x 10 30 20 10 20 car\n", "non-numeric"),
        ("dota", "10 10 30 10 30 10 10 10 car\n", "degenerate polygon"),
    ],
)
def test_folder_label_errors_name_file_and_line(
    tmp_path: Path, label_format: str, text: str, message: str
) -> None:
    root = _folder(tmp_path / "rec", label_format, {"a": "", "b": text})
    with pytest.raises(DatasetError, match=message) as info:
        PairedFolder(root)
    assert info.value.path == root / "labels" / "b.txt"
    ds = PairedFolder(root, skip_invalid=True)
    assert [r.image_id for r in ds.records] == ["a"] and ds.skipped[
        0
    ].path == root / "labels" / "b.txt"


def test_folder_manifest_and_file_errors(tmp_path: Path) -> None:
    root = _folder(tmp_path / "rec", "yolo", {"a": "", "b": ""})
    (root / "labels" / "b.txt").unlink()
    with pytest.raises(DatasetError, match="label file not found") as info:
        PairedFolder(root)
    assert info.value.path == root / "labels" / "b.txt"
    for manifest, message in (
        ({"classes": ["a"], "label_format": "coco"}, "label_format"),
        ({"classes": [], "label_format": "yolo"}, "classes"),
        (
            {"classes": ["a"], "label_format": "yolo", "clases": 1},
            r"unknown field\(s\) \['clases'\]",
        ),
        (
            {
                "classes": ["a"],
                "label_format": "yolo",
                "thermal_normalization": {"scheme": "gamma"},
            },
            "thermal_normalization",
        ),
    ):
        (root / "manifest.yaml").write_text(yaml.safe_dump(manifest))
        with pytest.raises(DatasetError, match=message) as info:
            PairedFolder(root)
        assert info.value.path == root / "manifest.yaml"
    (root / "manifest.yaml").unlink()
    with pytest.raises(DatasetError, match="manifest not found"):
        PairedFolder(root)


def test_16bit_thermal_without_normalization_is_refused_at_load(tmp_path: Path) -> None:
    root = _folder(tmp_path / "rec", "yolo", {"a": ""}, thermal_normalization=None)
    manifest = yaml.safe_load((root / "manifest.yaml").read_text())
    manifest.pop("thermal_normalization")
    (root / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    ds = PairedFolder(root)
    with pytest.raises(DatasetError, match="uint16; set thermal_normalization") as info:
        ds[0]
    assert info.value.path == root / "thermal" / "a.png"
    eight_bit = PairedFolder(_folder(tmp_path / "rec8", "yolo", {"a": ""}, thermal_16bit=False))
    assert eight_bit[0]["thermal"].max() == pytest.approx(250 / 255)


# ------------------------------------------------------------------ synthetic, factory, collate


def test_synthetic_dataset_is_deterministic_per_index() -> None:
    ds = build_dataset(
        "synthetic", length=5, width=96, height=64, seed=3, classes=("car", "person")
    )
    assert isinstance(ds, SyntheticDataset) and len(ds) == 5 and ds.class_names == ("car", "person")
    a, b = ds[4], ds[2]
    again = SyntheticDataset(5, width=96, height=64, seed=3, classes=("car", "person"))[4]
    assert np.array_equal(a["rgb"], again["rgb"]) and np.array_equal(a["boxes"], again["boxes"])
    assert not np.array_equal(a["rgb"], b["rgb"])
    assert (
        a["thermal"].dtype == np.float32 and a["thermal"].min() >= 0.0 and a["thermal"].max() <= 1.0
    )
    assert a["image_id"] == "synthetic_3_000004"
    with pytest.raises(IndexError):
        ds[5]


def test_build_dataset_rejects_unknown_format_options_and_roots(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset format 'kaist'"):
        build_dataset("kaist", tmp_path)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['splitt'\]"):
        build_dataset("m3fd", tmp_path, splitt="train")
    with pytest.raises(ValueError, match="needs a root"):
        build_dataset("llvip")
    with pytest.raises(ValueError, match="takes no root"):
        build_dataset("synthetic", tmp_path)
    assert isinstance(build_dataset("M3FD", _m3fd(tmp_path / "m"), split="train"), M3FD)
    assert isinstance(build_dataset("DroneVehicle", _drone(tmp_path / "d")), DroneVehicle)


def test_collate_batches_model_tensors(tmp_path: Path) -> None:
    ds = M3FD(_m3fd(tmp_path / "M3FD"))
    loader = DataLoader(ds, batch_size=3, collate_fn=collate)
    batch = next(iter(loader))
    assert batch["rgb"].shape == (3, 3, H, W) and batch["rgb"].dtype == torch.float32
    assert batch["thermal"].shape == (3, 1, H, W) and batch["thermal"].dtype == torch.float32
    assert batch["rgb"][0, :, 3, 3].tolist() == [1.0, 0.0, 0.0]
    assert batch["image_ids"] == ["00000", "00001", "00002"]
    assert [t["boxes"].shape for t in batch["targets"]] == [(2, 5), (3, 5), (1, 5)]
    assert batch["targets"][1]["labels"].dtype == torch.int64
    mixed = [ds[0], DroneVehicle(_drone(tmp_path / "d"), remove_border=False)[0]]
    with pytest.raises(ValueError, match="differ in size"):
        collate(mixed)
    with pytest.raises(ValueError, match="empty batch"):
        collate([])


def test_folder_reads_a_real_vifb_pair(tmp_path: Path, vifb_dir: Path) -> None:
    """Real registered pair (JPEG, IR stored as 3 near-equal channels) through the folder loader."""
    root = tmp_path / "vifb"
    for sub in ("rgb", "thermal", "labels"):
        (root / sub).mkdir(parents=True)
    (root / "rgb" / "manCar.jpg").write_bytes((vifb_dir / "vis" / "manCar.jpg").read_bytes())
    (root / "thermal" / "manCar.jpg").write_bytes((vifb_dir / "ir" / "manCar.jpg").read_bytes())
    (root / "labels" / "manCar.txt").write_text("0 0.5 0.5 0.2 0.4\n")
    (root / "manifest.yaml").write_text(
        yaml.safe_dump({"classes": ["person"], "label_format": "yolo"})
    )
    item = PairedFolder(root)[0]
    bgr = cv2.imread(str(vifb_dir / "vis" / "manCar.jpg"))
    ir = cv2.imread(str(vifb_dir / "ir" / "manCar.jpg"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(item["rgb"], bgr[:, :, ::-1])
    assert np.abs(item["thermal"] - ir / 255.0).max() <= 1.5 / 255
    height, width = ir.shape
    np.testing.assert_allclose(
        item["boxes"], [[width / 2, height / 2, 0.2 * width, 0.4 * height, 0]], rtol=1e-6
    )


# ------------------------------------------------------------------ unlabelled pairs, mixture


def test_unlabelled_pairs_are_fusion_only_with_the_manifest_field(tmp_path: Path) -> None:
    root = _folder(tmp_path / "rec", "yolo", {"a": "0 0.5 0.5 0.25 0.5\n", "b": ""}, False)
    (root / "labels" / "b.txt").unlink()
    with pytest.raises(DatasetError, match="unlabelled: fusion_only") as info:
        PairedFolder(root)
    assert info.value.path == root / "labels" / "b.txt"
    manifest = yaml.safe_load((root / "manifest.yaml").read_text())
    (root / "manifest.yaml").write_text(yaml.safe_dump({**manifest, "unlabelled": "skip"}))
    with pytest.raises(DatasetError, match="field 'unlabelled' must be one of"):
        PairedFolder(root)
    (root / "manifest.yaml").write_text(yaml.safe_dump({**manifest, "unlabelled": "fusion_only"}))
    ds = PairedFolder(root)
    a, b = ds[0], ds[1]
    assert a["labelled"] is True and len(a["boxes"]) == 1
    assert b["labelled"] is False and b["boxes"].shape == (0, 5) and b["labels"].shape == (0,)
    assert b["thermal"].max() == pytest.approx(250 / 255)  # still a full pair for fusion
    augment = PairedAugment(AugmentConfig(output_size=(32, 32)), seed=0)
    assert augment(b)["labelled"] is False and augment(a)["labelled"] is True
    batch = collate([augment(a), augment(b)])
    flags = [t["labelled"] for t in batch["targets"]]
    assert all(f.dtype == torch.bool and f.shape == () for f in flags)
    assert [bool(f) for f in flags] == [True, False]
    shutil.rmtree(root / "labels")  # a fusion-only dataset may have no labels at all
    assert [item["labelled"] for item in PairedFolder(root)] == [False, False]


def test_every_format_marks_its_items_labelled(tmp_path: Path) -> None:
    assert M3FD(_m3fd(tmp_path / "m"))[0]["labelled"] is True
    assert SyntheticDataset(2, width=W, height=H)[1]["labelled"] is True
    assert DroneVehicle(_drone(tmp_path / "d"))[0]["labelled"] is True
    assert collate([SyntheticDataset(1, width=W, height=H)[0]])["targets"][0]["labelled"]
    with pytest.raises(ValueError, match=r"item\['labelled'\] must be a bool"):
        check_item({**SyntheticDataset(1, width=W, height=H)[0], "labelled": "no"}, False)


def _real_like(root: Path) -> Path:
    """8-bit paired folder: 4 labelled pairs (train a b c, val d) and 1 unlabelled (train)."""
    labels = {s: "0 0.5 0.5 0.25 0.5\n" for s in "abcde"}
    root = _folder(root, "yolo", labels, False, unlabelled="fusion_only", splits=SPLITS)
    (root / "labels" / "e.txt").unlink()
    (root / "train.txt").write_text("a\nb\nc\ne\n")
    (root / "val.txt").write_text("d\n")
    return root


SPLITS = {"train": "train.txt", "val": "val.txt"}


def _parts(root: Path, **synthetic) -> list[dict]:
    return [
        {"format": "folder", "root": str(root), "repeat": 2},
        {
            "format": "synthetic",
            "options": {"length": 3, "width": W, "height": H, "max_objects": 2},
            "val": False,
            **synthetic,
        },
    ]


def test_mixture_repeats_parts_and_keeps_each_parts_thermal_normalization(tmp_path: Path) -> None:
    root = _real_like(tmp_path / "real")
    train = build_dataset("mixture", parts=_parts(root), role="train", split="train")
    assert isinstance(train, MixtureDataset) and len(train) == 2 * 4 + 3
    assert train.class_names == ("person", "car") and not train.rotated
    assert [train.locate(i) for i in (0, 4, 7, 8, 10)] == [(0, 0), (0, 0), (0, 3), (1, 0), (1, 2)]
    real, scene = train[4], train[9]
    assert real["image_id"] == "a" and real["thermal"].max() == pytest.approx(250 / 255)
    assert not train[3]["labelled"] and train[8]["labelled"]
    alone = SyntheticDataset(3, width=W, height=H, max_objects=2)[1]
    np.testing.assert_array_equal(scene["thermal"], alone["thermal"])  # its own fixed range
    assert scene["thermal"].min() >= 0.0 and scene["thermal"].max() <= 1.0
    parts = train.manifest["parts"]
    assert parts[0]["thermal_normalization"] == "8-bit / 255"
    assert parts[1]["thermal_normalization"]["scheme"] == "fixed_range"
    val = build_dataset("mixture", parts=_parts(root), role="val", split="val")
    assert len(val) == 1 and val[0]["image_id"] == "d"  # repeat is for training only
    # a synthetic part in validation draws other scenes than in training (seed + 1000)
    with_val = _parts(root, val={"length": 2})
    val = build_dataset("mixture", parts=with_val, role="val", split="val")
    assert len(val) == 1 + 2 and val[1]["image_id"] == "synthetic_1000_000000"
    trained = build_dataset("mixture", parts=with_val, role="train", split="train")
    assert trained[8]["image_id"] == "synthetic_0_000000"


def test_mixture_errors_name_the_part(tmp_path: Path) -> None:
    root = _real_like(tmp_path / "real")
    other_order = _parts(root)
    other_order[1]["options"]["classes"] = ["car", "person"]
    with pytest.raises(ValueError, match=r"parts\[1\] \(synthetic\): classes \['car', 'person'\]"):
        build_dataset("mixture", parts=other_order, split="train")
    cases = [
        ([{"format": "kaist", "root": "x"}], r"parts\[0\]\.format must be one of"),
        ([{"format": "folder", "root": str(root), "repeat": 0}], r"parts\[0\]\.repeat must be"),
        ([{"format": "synthetic", "options": {"splitt": 1}}], r"parts\[0\]\.options\.splitt"),
        ([{"format": "synthetic", "val": {"seed": 0}}], r"parts\[0\]\.val\.seed must be different"),
        ([{"format": "folder"}], r"parts\[0\]\.root must be a folder"),
        ([{"format": "synthetic", "val": False}], "nothing for the val role"),
    ]
    for parts, message in cases:
        with pytest.raises(ValueError, match=message):
            build_dataset("mixture", parts=parts, role="val")
    with pytest.raises(ValueError, match="thermal_normalization: a mixture does not hand"):
        build_dataset("mixture", parts=_parts(root), thermal_normalization={"scheme": "minmax"})
    with pytest.raises(ValueError, match="splitt must be an option of at least one part"):
        build_dataset("mixture", parts=_parts(root), splitt="train")
    with pytest.raises(ValueError, match="takes no root"):
        build_dataset("mixture", tmp_path, parts=_parts(root))


def _mixture_config(tmp_path: Path, parts: list[dict], **overrides):
    from fusion_training.config import load_training_config

    nano = Path(__file__).resolve().parents[1] / "config" / "training" / "synthetic_nano.yaml"
    dataset = {
        "format": "mixture",
        "root": None,
        "options": {"parts": parts},
        "train": {"split": "train"},
        "val": {"split": "val"},
    }
    return load_training_config(
        nano, {"dataset": dataset, "output_dir": str(tmp_path / "run"), **overrides}
    )


def test_training_config_checks_each_mixture_part_and_the_trainer_builds_it(
    tmp_path: Path,
) -> None:
    from fusion_training.config import TrainingConfigError
    from fusion_training.data_loading import build_datasets

    root = _real_like(tmp_path / "real")
    bad = _parts(root)
    bad[1]["format"] = "synthetc"
    with pytest.raises(TrainingConfigError, match=r"dataset\.options\.parts\[1\]\.format"):
        _mixture_config(tmp_path, bad)
    bad = _parts(root)
    bad[0]["options"] = {"lenght": 3}
    with pytest.raises(TrainingConfigError, match=r"dataset\.options\.parts\[0\]\.options\.lenght"):
        _mixture_config(tmp_path, bad)
    with pytest.raises(TrainingConfigError, match="thermal_normalization must be set with"):
        _mixture_config(tmp_path, _parts(root), thermal_normalization=None)
    shared = {"dataset.options.thermal_normalization": {"scheme": "minmax"}}
    with pytest.raises(TrainingConfigError, match=r"dataset\.options\.thermal_normalization"):
        _mixture_config(tmp_path, _parts(root), **shared)
    recorded = {"scheme": "fixed_range", "params": {"lo": 0, "hi": 255}}
    parts = _parts(root)
    del parts[1]["options"]["width"], parts[1]["options"]["height"]
    config = _mixture_config(tmp_path, parts, thermal_normalization=recorded)
    train, val, names, spec = build_datasets(config, rotated=False)
    assert names == ("person", "car") and len(train) == 2 * 4 + 3 and len(val) == 1
    # the run's input size reaches the synthetic part; the recorded normalization does not
    scene = SyntheticDataset(3, width=128, height=96, max_objects=2)[0]
    np.testing.assert_array_equal(train[8]["thermal"], scene["thermal"])
    assert spec == build_normalizer(recorded).to_dict()


def test_evaluation_scores_detection_on_labelled_pairs_only(
    tmp_path: Path, node_checkpoint: Path
) -> None:
    from fusion_training.evaluate import evaluate_engine

    from fusion_perception.engine import FusionEngine

    labels = {"a": "0 0.5 0.5 0.25 0.5\n", "b": ""}
    root = _folder(tmp_path / "rec", "yolo", labels, False, unlabelled="fusion_only")
    (root / "labels" / "b.txt").unlink()
    engine = FusionEngine(node_checkpoint, device="cpu", score_threshold=0.001)
    result = evaluate_engine(engine, PairedFolder(root))
    meta = result["meta"]
    assert meta["images"] == 2 and meta["detection_images"] == 1 and meta["unlabelled_images"] == 1
    assert "mAP50" in result["detection"] and len(result["per_image"]) == 2
    shutil.rmtree(root / "labels")  # now no pair has labels
    fusion_only = evaluate_engine(engine, PairedFolder(root), limit=1)
    assert fusion_only["detection"] == {} and fusion_only["meta"]["detection_images"] == 0
    assert set(fusion_only["fusion"]) >= {"EN", "SSIM"}


def test_evaluation_scores_only_the_fusion_metrics_asked_for(
    tmp_path: Path, node_checkpoint: Path
) -> None:
    from fusion_training.evaluate import evaluate_engine

    from fusion_perception.engine import FusionEngine

    root = _folder(tmp_path / "rec", "yolo", {"a": "0 0.5 0.5 0.25 0.5\n", "b": ""}, False)
    engine = FusionEngine(node_checkpoint, device="cpu", score_threshold=0.001)
    full = evaluate_engine(engine, PairedFolder(root))
    two = evaluate_engine(engine, PairedFolder(root), fusion_metrics=["EN", "SSIM"])
    assert set(two["fusion"]) == {"EN", "SSIM"} and set(full["fusion"]) > {"EN", "SSIM", "VIF"}
    assert two["fusion"]["EN"] == pytest.approx(full["fusion"]["EN"])
    # detection only: no fusion score at all, the same detection score
    detection_only = evaluate_engine(engine, PairedFolder(root), fusion_metrics=())
    assert detection_only["fusion"] == {} and detection_only["per_image"] == {}
    for key in ("mAP50", "mAP50_95"):
        assert detection_only["detection"][key] == full["detection"][key]
    assert detection_only["meta"]["images"] == 2
