"""fusion-bag2dataset on real rosbag2 recordings written with rosbags (sqlite3 and mcap)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# test the working tree's training/ package, not a copy installed into the venv
sys.path.insert(0, str(REPO / "training"))

from fusion_training.bag2dataset import OFFLINE_SYNC, sync_from_node_params  # noqa: E402
from fusion_training.bags import bag_name  # noqa: E402
from fusion_training.cli.bag2dataset import main  # noqa: E402
from fusion_training.datasets import PairedFolder, build_dataset  # noqa: E402
from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

from fusion_perception.cli.common import run_cli  # noqa: E402
from fusion_perception.registration import Registration  # noqa: E402
from fusion_perception.synthetic import SceneGenerator  # noqa: E402
from fusion_perception.thermal import make_normalizer  # noqa: E402

TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
Image = TYPESTORE.types["sensor_msgs/msg/Image"]
CompressedImage = TYPESTORE.types["sensor_msgs/msg/CompressedImage"]
Header = TYPESTORE.types["std_msgs/msg/Header"]
Time = TYPESTORE.types["builtin_interfaces/msg/Time"]

WIDTH, HEIGHT = 160, 128
BASE_NS = 1_700_000_000 * 10**9
PERIOD_NS = 100_000_000  # 10 Hz
THERMAL_LATE_NS = 45_000_000  # the thermal driver stamps 45 ms late
RGB_TOPIC, THERMAL_TOPIC = "/cam/rgb", "/cam/thermal"
FIXED = ["--normalization", "fixed_range", "--range-lo", "5000", "--range-hi", "12000"]


@dataclass
class Recording:
    """A bag on disk and what the converter should find in it, keyed by RGB stamp."""

    path: Path
    rgb: dict[int, np.ndarray] = field(default_factory=dict)  # RGB order, as decoded
    thermal: dict[int, np.ndarray] = field(default_factory=dict)  # raw, thermal camera frame

    @property
    def name(self) -> str:
        return bag_name(self.path)


def _header(stamp_ns: int, frame: str) -> object:
    return Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame)


def _image(stamp_ns: int, frame: str, pixels: np.ndarray, encoding: str, big: bool = False):
    data = np.ascontiguousarray(pixels)
    if big:
        data = data.astype(data.dtype.newbyteorder(">"))
    row = data.reshape(data.shape[0], -1).view(np.uint8)
    return Image(
        header=_header(stamp_ns, frame),
        height=pixels.shape[0],
        width=pixels.shape[1],
        encoding=encoding,
        is_bigendian=int(big),
        step=row.shape[1],
        data=row.reshape(-1).copy(),
    )


def write_bag(
    path: Path,
    storage: str = "sqlite3",
    frames: int = 24,
    rgb_kind: str = "bgr8",
    thermal_encoding: str = "mono16",
    thermal_size: tuple[int, int] = (WIDTH, HEIGHT),
    drop_thermal: Sequence[int] = (7,),
    seed: int = 0,
) -> Recording:
    """RGB and thermal at 10 Hz with +-4 ms stamp jitter, thermal stamped 45 ms late, one
    thermal frame dropped, messages logged (in log-time order) a few ms after their stamps."""
    plugin = StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP
    rng = np.random.default_rng(seed)
    scenes = SceneGenerator(WIDTH, HEIGHT, classes=("person", "car"), seed=seed)
    recording = Recording(path)
    messages = []  # (log time, topic, msg, msgtype)
    for i in range(frames):
        scene = scenes.render(i * PERIOD_NS / 1e9)
        rgb_stamp = BASE_NS + i * PERIOD_NS + int(rng.integers(-4, 5)) * 1_000_000
        thermal_stamp = BASE_NS + i * PERIOD_NS + THERMAL_LATE_NS + int(rng.integers(-4, 5)) * 10**6
        if rgb_kind == "jpeg":
            ok, jpeg = cv2.imencode(".jpg", scene.rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert ok
            msg = CompressedImage(header=_header(rgb_stamp, "rgb"), format="jpeg", data=jpeg)
            expected = cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            messages.append((rgb_stamp + 5_000_000, RGB_TOPIC, msg, "CompressedImage"))
        else:
            pixels = scene.rgb[:, :, ::-1] if rgb_kind == "bgr8" else scene.rgb
            msg = _image(rgb_stamp, "rgb", pixels, rgb_kind)
            expected = scene.rgb
            messages.append((rgb_stamp + 5_000_000, RGB_TOPIC, msg, "Image"))
        recording.rgb[rgb_stamp] = expected
        raw = scene.thermal_raw
        if thermal_size != (WIDTH, HEIGHT):
            raw = cv2.resize(raw, thermal_size, interpolation=cv2.INTER_AREA)
        big = thermal_encoding == "16UC1_big"
        encoding = "16UC1" if big else thermal_encoding
        if encoding in ("mono8", "8UC1"):
            raw = (raw // 64).astype(np.uint8)
        elif encoding == "32FC1":
            raw = (raw.astype(np.float32) / 100.0 - 273.15).astype(np.float32)
        if i in drop_thermal:
            continue
        recording.thermal[rgb_stamp] = raw
        if encoding == "png16":  # compressed_image_transport's 16-bit PNG
            png = cv2.imencode(".png", raw)[1]
            header = _header(thermal_stamp, "thermal")
            msg = CompressedImage(header=header, format="mono16; png compressed", data=png)
            messages.append((thermal_stamp + 2_000_000, THERMAL_TOPIC, msg, "CompressedImage"))
        else:
            msg = _image(thermal_stamp, "thermal", raw, encoding, big)
            messages.append((thermal_stamp + 2_000_000, THERMAL_TOPIC, msg, "Image"))
    messages.sort(key=lambda m: m[0])
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        connections = {
            (topic, kind): writer.add_connection(
                topic, f"sensor_msgs/msg/{kind}", typestore=TYPESTORE
            )
            for topic, kind in {(m[1], m[3]) for m in messages}
        }
        for log_ns, topic, msg, kind in messages:
            data = TYPESTORE.serialize_cdr(msg, f"sensor_msgs/msg/{kind}")
            writer.write(connections[(topic, kind)], log_ns, data)
    return recording


def convert(bags: Sequence[Path], out: Path, *extra: str) -> int:
    argv = [*map(str, bags), "--rgb-topic", RGB_TOPIC, "--thermal-topic", THERMAL_TOPIC]
    argv += ["--out", str(out), "--thermal-offset", "-0.045", "--no-progress", *extra]
    return run_cli("fusion-bag2dataset", main, argv)


def stamp_of(stem: str, recording: Recording) -> int:
    prefix = f"{recording.name}_"
    assert stem.startswith(prefix), stem
    return int(stem[len(prefix) :])


def assert_no_partial_pairs(out: Path) -> None:
    """Every stem present in any folder has all three files; no temporary files remain."""
    stems = {}
    for sub in ("rgb", "thermal", "labels"):
        folder = out / sub
        files = sorted(folder.iterdir()) if folder.is_dir() else []
        assert not [f for f in files if f.name.startswith(".")], files
        stems[sub] = {f.stem for f in files}
    assert stems["rgb"] == stems["thermal"] == stems["labels"]


def test_sqlite_bgr8_mono16_pairs_pixels_and_manifest(tmp_path: Path) -> None:
    recording = write_bag(tmp_path / "flight_a", "sqlite3")
    out = tmp_path / "dataset"
    assert convert([recording.path], out, "--classes", "person,car", *FIXED) == 0

    dataset = PairedFolder(out)
    assert len(dataset) == 23  # 24 RGB frames, one thermal frame dropped
    normalizer = make_normalizer("fixed_range", lo=5000, hi=12000)
    for index, record in enumerate(dataset.records):
        stamp = stamp_of(record.image_id, recording)
        stored = cv2.imread(str(record.thermal_path), cv2.IMREAD_UNCHANGED)
        assert stored.dtype == np.uint16 and record.thermal_path.suffix == ".png"
        np.testing.assert_array_equal(stored, recording.thermal[stamp])  # raw counts kept
        item = dataset[index]
        np.testing.assert_array_equal(item["rgb"], recording.rgb[stamp])
        np.testing.assert_allclose(item["thermal"], normalizer(recording.thermal[stamp]))
        assert len(item["boxes"]) == 0 and record.labels.shape == (0,)

    manifest = yaml.safe_load((out / "manifest.yaml").read_text())
    assert manifest["classes"] == ["person", "car"] and manifest["label_format"] == "yolo"
    assert manifest["thermal_normalization"] == normalizer.to_dict()
    source = yaml.safe_load((out / "source.yaml").read_text())
    assert source["topics"] == {"rgb": RGB_TOPIC, "thermal": THERMAL_TOPIC}
    assert source["calibration"] is None
    assert source["sync"]["thermal_offset"] == -0.045 and source["sync"]["slop"] == 0.02
    assert source["counts"] == {"bags": 1, "pairs": 23, "written": 23, "objects": 0}
    (bag,) = source["bags"]
    assert bag["messages"] == {"rgb": 24, "thermal": 23}
    assert bag["rgb_type"] == "sensor_msgs/msg/Image"
    sync = bag["sync"]
    assert sync["pairs"] == 23 and sync["streams"]["thermal"]["paired"] == 23
    assert sync["streams"]["rgb"]["received"] == 24
    assert 0 < sync["dt_abs_mean_ms"] <= sync["dt_abs_max_ms"] <= 8.0  # jitter only
    assert_no_partial_pairs(out)


def test_mcap_compressed_rgb_registration_every_and_two_bags(tmp_path: Path) -> None:
    thermal_size = (80, 64)
    bags = [
        write_bag(tmp_path / name, "mcap", 12, "jpeg", thermal_size=thermal_size, seed=seed)
        for name, seed in (("day", 1), ("night", 2))
    ]
    calibration = {
        "homography": [[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]],
        "rgb_size": [WIDTH, HEIGHT],
        "thermal_size": list(thermal_size),
    }
    calib_file = tmp_path / "calib.yaml"
    calib_file.write_text(yaml.safe_dump(calibration))
    registration = Registration.from_dict(calibration)
    out = tmp_path / "dataset"
    code = convert(
        [b.path for b in bags],
        out,
        "--classes",
        "person",
        "--calibration",
        str(calib_file),
        "--every",
        "2",
    )
    assert code == 0

    dataset = build_dataset("folder", out)
    # 12 frames with frame 7's thermal dropped: 11 pairs per bag, every 2nd kept -> 6
    assert len(dataset) == 12
    for record in dataset.records:
        recording = bags[0] if record.image_id.startswith("day_") else bags[1]
        stamp = stamp_of(record.image_id, recording)
        rgb = cv2.cvtColor(cv2.imread(str(record.rgb_path)), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(rgb, recording.rgb[stamp])  # the decoded JPEG, losslessly
        stored = cv2.imread(str(record.thermal_path), cv2.IMREAD_UNCHANGED)
        assert stored.shape == (HEIGHT, WIDTH)
        expected, valid = registration.warp(recording.thermal[stamp])
        np.testing.assert_array_equal(stored, expected)
        # the homography doubles the thermal frame: RGB pixel (2x, 2y) is thermal pixel (x, y)
        assert stored[20, 40] == recording.thermal[stamp][10, 20]
        assert valid.mean() > 0.95
    source = yaml.safe_load((out / "source.yaml").read_text())
    assert source["calibration"] == registration.to_dict()
    assert [b["name"] for b in source["bags"]] == ["day", "night"]
    assert [b["written"] for b in source["bags"]] == [6, 6]
    assert source["bags"][0]["rgb_type"] == "sensor_msgs/msg/CompressedImage"
    manifest = yaml.safe_load((out / "manifest.yaml").read_text())
    assert manifest["thermal_normalization"]["scheme"] == "percentile"  # the default


@pytest.mark.parametrize(
    ("encoding", "dtype", "suffix"),
    [
        ("mono8", np.uint8, ".png"),
        ("32FC1", np.float32, ".tiff"),
        ("16UC1_big", np.uint16, ".png"),
        ("png16", np.uint16, ".png"),  # CompressedImage: counts kept exactly
    ],
)
def test_thermal_encodings_are_stored_raw(
    tmp_path: Path, encoding: str, dtype: type, suffix: str
) -> None:
    recording = write_bag(tmp_path / "bag", "mcap", 5, "rgb8", encoding, drop_thermal=())
    out = tmp_path / "out"
    assert convert([recording.path], out, "--classes", "car", "--normalization", "minmax") == 0
    dataset = PairedFolder(out)
    assert len(dataset) == 5
    for index, record in enumerate(dataset.records):
        stamp = stamp_of(record.image_id, recording)
        assert record.thermal_path.suffix == suffix
        stored = cv2.imread(str(record.thermal_path), cv2.IMREAD_UNCHANGED)
        assert stored.dtype == dtype
        np.testing.assert_array_equal(stored, recording.thermal[stamp])
        thermal = dataset[index]["thermal"]
        assert thermal.dtype == np.float32 and thermal.min() == 0.0 and thermal.max() == 1.0


def test_offline_pairing_defaults_match_the_node(tmp_path: Path) -> None:
    params = yaml.safe_load((REPO / "config" / "uav.yaml").read_text())
    sync = params["/**"]["ros__parameters"]["sync"]
    defaults = OFFLINE_SYNC
    for key in ("mode", "slop", "rgb_offset", "thermal_offset", "queue_size"):
        assert getattr(defaults, key) == sync[key], key
    assert defaults.max_age is None  # log time and camera stamps may use different clocks
    custom = tmp_path / "params.yaml"
    custom.write_text(
        yaml.safe_dump({"/fusion": {"ros__parameters": {"sync": {**sync, "slop": 0.01}}}})
    )
    assert sync_from_node_params(custom).slop == 0.01
    custom.write_text(yaml.safe_dump({"/fusion": {"ros__parameters": {"sync": {"slop": -1}}}}))
    with pytest.raises(ValueError, match="slop"):
        sync_from_node_params(custom)


def test_without_the_thermal_offset_nothing_pairs_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recording = write_bag(tmp_path / "bag", "sqlite3", 6)
    out = tmp_path / "out"
    argv = [str(recording.path), "--rgb-topic", RGB_TOPIC, "--thermal-topic", THERMAL_TOPIC]
    argv += ["--out", str(out), "--classes", "car", "--no-progress"]
    assert run_cli("fusion-bag2dataset", main, argv) == 2
    err = capsys.readouterr().err
    assert "no RGB/thermal pairs" in err and "--thermal-offset" in err
    assert not out.exists()


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_truncated_bag_is_a_clear_error_before_anything_is_written(
    tmp_path: Path, storage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    recording = write_bag(tmp_path / "bag", storage, 8)
    (data_file,) = [p for p in recording.path.iterdir() if p.suffix in (".db3", ".mcap")]
    with data_file.open("r+b") as stream:
        stream.truncate(data_file.stat().st_size // 2)
    out = tmp_path / "out"
    assert convert([recording.path], out, "--classes", "car") == 2
    err = capsys.readouterr().err
    assert "fusion-bag2dataset: error:" in err and str(recording.path) in err
    assert "truncated or corrupted" in err
    assert not out.exists()


def _corrupt_middle(data_file: Path) -> None:
    """Overwrite 8 KB at 60 % of a bag's data file with noise (a damaged sqlite page)."""
    size = data_file.stat().st_size
    with data_file.open("r+b") as stream:
        stream.seek(int(size * 0.6))
        stream.write(np.random.default_rng(0).integers(0, 256, 8192, dtype=np.uint8).tobytes())


def test_corruption_mid_bag_gives_a_manifest_of_exactly_the_complete_pairs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bag damaged part-way keeps the pairs read before the damage, the next bag is still
    converted, the manifest covers exactly the pairs on disk, and the exit code says it failed."""
    damaged = write_bag(tmp_path / "bag", "sqlite3", 24)
    _corrupt_middle(damaged.path / "bag.db3")
    good = write_bag(tmp_path / "later", "sqlite3", 6, drop_thermal=(), seed=3)
    out = tmp_path / "out"
    assert convert([damaged.path, good.path], out, "--classes", "car") == 2
    err = capsys.readouterr().err
    assert "fusion-bag2dataset: error:" in err and str(damaged.path) in err
    assert "corrupted or truncated" in err and "complete pair(s)" in err
    assert "with a manifest" in err and "complete: false" in err
    assert_no_partial_pairs(out)

    manifest = yaml.safe_load((out / "manifest.yaml").read_text())
    assert manifest["description"].startswith("INCOMPLETE: bag is damaged")
    dataset = PairedFolder(out)  # a consistent dataset: the loader accepts it as it is
    on_disk = {p.stem for p in (out / "rgb").iterdir()}
    assert {r.image_id for r in dataset.records} == on_disk
    from_damaged = sorted(s for s in on_disk if s.startswith("bag_"))
    assert 0 < len(from_damaged) < 23
    assert {s for s in on_disk if s.startswith("later_")} == {
        f"later_{stamp:019d}" for stamp in good.rgb
    }
    for stem in from_damaged:  # the pairs that are there are whole and correct
        stamp = stamp_of(stem, damaged)
        thermal = cv2.imread(str(out / "thermal" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(thermal, damaged.thermal[stamp])

    source = yaml.safe_load((out / "source.yaml").read_text())
    first, second = source["bags"]
    assert first["complete"] is False and "unreadable after message" in first["error"]
    assert first["written"] == len(from_damaged)
    assert second["complete"] is True and second["error"] is None and second["written"] == 6
    assert source["counts"]["written"] == len(on_disk)


def test_corruption_before_any_pair_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fusion_training.bag2dataset as module

    recording = write_bag(tmp_path / "bag", "sqlite3", 4)
    out = tmp_path / "out"

    def damaged_at_once(*args, **kwargs):
        raise module.StorageDamageError(f"{recording.path}: unreadable after message 0")
        yield

    monkeypatch.setattr(module, "replay_pairs", damaged_at_once)
    with pytest.raises(module.BagDamagedError, match="nothing was written") as info:
        module.convert_bags(
            [recording.path],
            out,
            RGB_TOPIC,
            THERMAL_TOPIC,
            normalization=make_normalizer("percentile"),
            classes=["car"],
            progress=False,
        )
    assert info.value.result is None
    assert not out.exists()


def test_missing_topic_and_wrong_type_name_what_the_bag_has(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recording = write_bag(tmp_path / "bag", "mcap", 4)
    out = tmp_path / "out"
    argv = [str(recording.path), "--rgb-topic", RGB_TOPIC, "--thermal-topic", "/ir/image"]
    assert run_cli("fusion-bag2dataset", main, [*argv, "--out", str(out), "--classes", "a"]) == 2
    err = capsys.readouterr().err
    assert "'/ir/image' is not in the bag" in err and THERMAL_TOPIC in err
    assert "sensor_msgs/msg/Image" in err
    jpeg_bag = write_bag(tmp_path / "jpeg_bag", "mcap", 4, "jpeg")
    argv = [str(jpeg_bag.path), "--rgb-topic", THERMAL_TOPIC, "--thermal-topic", RGB_TOPIC]
    argv += ["--thermal-offset", "0.045", "--no-progress"]  # roles swapped: decoding refuses
    assert run_cli("fusion-bag2dataset", main, [*argv, "--out", str(out), "--classes", "a"]) == 2
    err = capsys.readouterr().err
    assert f"{THERMAL_TOPIC}: encoding: 'mono16' is not a colour or 8-bit grey encoding" in err
    assert not (out / "manifest.yaml").exists()
    text_bag = tmp_path / "text_bag"
    with Writer(text_bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        String = TYPESTORE.types["std_msgs/msg/String"]
        connection = writer.add_connection("/notes", "std_msgs/msg/String", typestore=TYPESTORE)
        writer.write(
            connection, BASE_NS, TYPESTORE.serialize_cdr(String(data="hi"), String.__msgtype__)
        )
    argv = [str(text_bag), "--rgb-topic", "/notes", "--thermal-topic", "/notes"]
    assert (
        run_cli(
            "fusion-bag2dataset", main, [*argv, "--out", str(tmp_path / "o2"), "--classes", "a"]
        )
        == 2
    )
    assert "'/notes' has type std_msgs/msg/String; supported: sensor_msgs/msg/Image" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("rgb_kind", "thermal_encoding", "message"),
    [
        ("yuv422", "mono16", "encoding: unsupported value 'yuv422'"),
        ("bgr8", "bgr8", "'bgr8' is not a thermal encoding"),
    ],
)
def test_unsupported_encoding_leaves_no_pairs(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    rgb_kind: str,
    thermal_encoding: str,
    message: str,
) -> None:
    recording = write_bag(tmp_path / "bag", "sqlite3", 4, "bgr8", "mono16", drop_thermal=())
    bad = write_bag(tmp_path / "bad", "sqlite3", 4, rgb_kind, thermal_encoding, drop_thermal=())
    out = tmp_path / "out"
    # the good bag converts first; the bad one fails on its first pair
    assert convert([recording.path, bad.path], out, "--classes", "car") == 2
    err = capsys.readouterr().err
    assert message in err and str(bad.path) in err
    assert "4 complete pair(s)" in err
    assert not (out / "manifest.yaml").exists()
    assert_no_partial_pairs(out)
    assert {p.stem for p in (out / "rgb").iterdir()} == {
        f"bag_{stamp:019d}" for stamp in recording.rgb
    }


def test_existing_output_and_bad_arguments_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recording = write_bag(tmp_path / "bag", "mcap", 3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    assert convert([recording.path], out, "--classes", "car") == 2
    assert "is not an empty folder" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "user data"
    fresh = tmp_path / "fresh"
    assert convert([recording.path], fresh) == 2
    assert "--classes: required without --pseudo-labels" in capsys.readouterr().err
    assert convert([recording.path], fresh, "--classes", "car", "--p-lo", "2") == 2
    assert "--p-lo: needs --normalization" in capsys.readouterr().err
    assert (
        convert([recording.path], fresh, "--classes", "car", "--normalization", "fixed_range") == 2
    )
    assert "needs --range-lo and --range-hi" in capsys.readouterr().err
    assert convert([tmp_path / "nope"], fresh, "--classes", "car") == 2
    assert "bag not found" in capsys.readouterr().err
    assert not fresh.exists()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from fusion_perception.cli.init import main as fusion_init

    folder = tmp_path_factory.mktemp("checkpoints")
    paths = {}
    for kind, config in (("horizontal", "nano.yaml"), ("rotated", "nano_obb.yaml")):
        paths[kind] = folder / f"{kind}.pt"
        args = [str(REPO / "config" / "models" / config), str(paths[kind])]
        assert fusion_init([*args, "--classes", "person,car", "--size", "128x96"]) == 0
    return paths


@pytest.mark.parametrize(("kind", "label_format"), [("horizontal", "yolo"), ("rotated", "dota")])
def test_pseudo_labels_in_the_checkpoints_format(
    tmp_path: Path, checkpoints: dict[str, Path], kind: str, label_format: str
) -> None:
    recording = write_bag(tmp_path / "bag", "mcap", 4, drop_thermal=())
    out = tmp_path / "out"
    extra = ["--pseudo-labels", str(checkpoints[kind]), "--score-threshold", "0.05"]
    assert convert([recording.path], out, *extra, "--device", "cpu") == 0
    manifest = yaml.safe_load((out / "manifest.yaml").read_text())
    assert manifest["classes"] == ["person", "car"]
    assert manifest["label_format"] == label_format
    # the checkpoint's own normalization is recorded when none is given
    assert manifest["thermal_normalization"]["scheme"] == "percentile"
    lines = [
        line.split()
        for path in sorted((out / "labels").iterdir())
        for line in path.read_text().splitlines()
    ]
    assert lines, "an untrained model still scores above 0.05 somewhere"
    for tokens in lines:
        if label_format == "yolo":
            assert len(tokens) == 5 and tokens[0] in ("0", "1")
            assert all(0.0 <= float(v) <= 1.0 for v in tokens[1:])
        else:
            assert len(tokens) == 10 and tokens[8] in ("person", "car") and tokens[9] == "0"
            xs, ys = np.array(tokens[0:8:2], float), np.array(tokens[1:8:2], float)
            assert xs.min() >= 0 and xs.max() <= WIDTH and ys.min() >= 0 and ys.max() <= HEIGHT
    dataset = PairedFolder(out)  # the loader accepts every pseudo-label
    assert dataset.rotated == (kind == "rotated")
    assert sum(len(r.labels) for r in dataset.records) == len(lines)
    source = yaml.safe_load((out / "source.yaml").read_text())
    assert source["pseudo_labels"]["objects"] == len(lines)
    assert len(source["pseudo_labels"]["sha256"]) == 64
    shutil.rmtree(out)
    # --classes must agree with the checkpoint's
    assert convert([recording.path], out, *extra, "--classes", "car,person") == 2
