"""rosbag2 recordings -> a paired-folder dataset, through the node's own decode, pairing,
registration and normalization code.

Each bag is replayed message by message in recording (log-time) order into a
:class:`~fusion_perception.pairing.PairingEngine` built from the node's ``sync.*`` parameters;
after every message the newest matched pair is taken, which is what the node does when its
worker keeps up with the cameras. Each pair is decoded with :mod:`fusion_perception.image_codec`
(never cv_bridge), thermal is optionally registered into the RGB frame, and the pair is written
in the format :class:`fusion_training.datasets.PairedFolder` reads:

    out/rgb/<stem>.png         RGB, 8-bit
    out/thermal/<stem>.png     raw thermal counts: 16-bit for mono16/16UC1, 8-bit for mono8/8UC1;
    out/thermal/<stem>.tiff    float32 for 32FC1 (degrees), so any normalization can be re-applied
    out/labels/<stem>.txt      pseudo-labels (YOLO or DOTA txt), or empty
    out/source.yaml            provenance: bags, topics, calibration, sync statistics, counts
    out/manifest.yaml          written last: the dataset exists once this file does

Stems are ``<bag name>_<RGB stamp in ns>``. Each pair's files are written under temporary names
and renamed into place, so the folder only ever holds complete pairs. A bag whose storage is
damaged part-way (a corrupted sqlite page, a truncated mcap chunk) keeps the pairs read before the
damage; the other bags are still converted, the manifest is written for exactly the pairs on disk,
``source.yaml`` marks that bag ``complete: false`` with the error, and the conversion ends with
:class:`BagDamagedError` (the CLI exits non-zero). Any other error (a bad encoding, a size mismatch)
leaves the complete pairs written so far and no manifest.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.typesys import Stores, get_typestore
from tqdm import tqdm

from fusion_perception import __version__
from fusion_perception.image_codec import ImageEncodingError
from fusion_perception.imaging import Registration, ThermalNormalizer
from fusion_perception.pairing import Pair, PairingEngine
from fusion_perception.pipeline import FramePipeline, decode_rgb_message, decode_thermal_message
from fusion_training.datasets.folder import LABEL_FORMATS

log = logging.getLogger(__name__)

IMAGE_MSG = "sensor_msgs/msg/Image"
COMPRESSED_MSG = "sensor_msgs/msg/CompressedImage"
RGB_TYPES = (IMAGE_MSG, COMPRESSED_MSG)
THERMAL_TYPES = (IMAGE_MSG,)
MANIFEST = "manifest.yaml"
SOURCE = "source.yaml"
_PARTIAL = ".partial"
# sensor_msgs/Image and CompressedImage are identical in Humble, Jazzy and Kilted; this store
# is only used for bags that carry no message definitions of their own.
_TYPESTORE = get_typestore(Stores.ROS2_KILTED)


class BagError(ValueError):
    """A bag that cannot be converted: unreadable, missing topic, wrong type or encoding."""


class _StorageDamageError(BagError):
    """Raised by ``replay_pairs`` when the bag's storage becomes unreadable part-way."""


class BagDamagedError(BagError):
    """Some bags were damaged part-way; ``result`` describes the dataset written from the rest
    (manifest included), or is None when nothing could be written."""

    def __init__(self, message: str, result: ConversionResult | None) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class SyncSettings:
    """The node's ``sync.*`` parameters (same names, seconds, same defaults as config/uav.yaml).

    ``max_age`` is off by default offline: it compares stamps with the recorder's log time,
    which comes from another clock when the cameras stamp with their own.
    """

    mode: str = "approximate"
    slop: float = 0.02
    rgb_offset: float = 0.0
    thermal_offset: float = 0.0
    queue_size: int = 10
    max_age: float | None = None

    def engine(self) -> PairingEngine:
        """A fresh PairingEngine with these settings (raises naming a bad value)."""
        return PairingEngine(
            mode=self.mode,
            slop_ns=round(self.slop * 1e9),
            offsets_ns={
                "rgb": round(self.rgb_offset * 1e9),
                "thermal": round(self.thermal_offset * 1e9),
            },
            queue_size=int(self.queue_size),
            max_age_ns=None if self.max_age is None else round(self.max_age * 1e9),
        )

    @classmethod
    def from_node_params(cls, path: str | Path) -> SyncSettings:
        """The ``sync.*`` values of a node parameter file (``<node>: ros__parameters: sync:``).

        Its ``max_age`` is not taken over (see the class docstring).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"--params: {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ValueError(f"--params: {path} is not valid YAML ({exc})") from exc
        nodes = [
            v["ros__parameters"]
            for v in (data or {}).values()
            if isinstance(v, Mapping) and isinstance(v.get("ros__parameters"), Mapping)
        ]
        if len(nodes) != 1:
            raise ValueError(
                f"--params: {path} must hold exactly one '<node>: ros__parameters:' block, "
                f"found {len(nodes)}"
            )
        sync = nodes[0].get("sync", {})
        if not isinstance(sync, Mapping):
            raise ValueError(f"--params: {path}: 'sync' must be a mapping, got {sync!r}")
        known = {"mode", "slop", "rgb_offset", "thermal_offset", "queue_size", "max_age", "backend"}
        unknown = sorted(set(sync) - known)
        if unknown:
            raise ValueError(f"--params: {path}: unknown sync parameter(s) {unknown}")
        # offline pairing is always the builtin engine, whatever the node's sync.backend
        values = {k: v for k, v in sync.items() if k not in ("max_age", "backend")}
        try:
            settings = replace(cls(), **values)
            settings.engine()  # validates every value
        except (TypeError, ValueError) as exc:
            raise ValueError(f"--params: {path}: sync: {exc}") from exc
        return settings


def _stamp_ns(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def decode_rgb(msg: Any, topic: str) -> np.ndarray:
    """An RGB-topic message (Image, or CompressedImage in any format OpenCV reads) -> uint8
    HxWx3 in RGB order; errors name the topic."""
    try:
        return decode_rgb_message(msg)
    except ImageEncodingError as exc:
        raise ImageEncodingError(f"{topic}: {exc}") from None


def decode_thermal(msg: Any, topic: str) -> np.ndarray:
    """A thermal Image or CompressedImage (16-bit PNG) -> raw HxW copy in native byte order:
    uint16 counts, uint8 or float32; errors name the topic."""
    try:
        return decode_thermal_message(msg)[0]
    except ImageEncodingError as exc:
        raise ImageEncodingError(f"{topic}: {exc}") from None


def thermal_suffix(raw: np.ndarray) -> str:
    """PNG keeps 8- and 16-bit counts losslessly; float (32FC1) needs TIFF."""
    return ".tiff" if raw.dtype == np.float32 else ".png"


def bag_name(path: Path) -> str:
    """A file-name-safe name for a bag (its folder or file stem)."""
    name = path.name if path.is_dir() else path.stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "bag"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class BagSource:
    """One opened bag and the two connections' types."""

    path: Path
    name: str
    reader: AnyReader
    rgb_type: str
    thermal_type: str
    counts: dict[str, int]

    def close(self) -> None:
        self.reader.close()


def open_bag(path: str | Path, rgb_topic: str, thermal_topic: str) -> BagSource:
    """Open a rosbag2 folder (sqlite3 or mcap) or a single .mcap/.db3 file and check that both
    topics exist with a supported type. Raises BagError naming the bag and the problem."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"{path}: bag not found")
    reader = AnyReader([path], default_typestore=_TYPESTORE)
    try:
        reader.open()
    except (AnyReaderError, OSError, ValueError) as exc:
        raise BagError(f"{path}: cannot read bag (truncated or corrupted?): {exc}") from None
    try:
        topics = reader.topics
        available = ", ".join(f"{t} [{i.msgtype}]" for t, i in sorted(topics.items()))
        types = {}
        for role, topic, allowed in (
            ("rgb", rgb_topic, RGB_TYPES),
            ("thermal", thermal_topic, THERMAL_TYPES),
        ):
            if topic not in topics:
                raise BagError(
                    f"{path}: --{role}-topic {topic!r} is not in the bag; it has: "
                    f"{available or 'no topics'}"
                )
            msgtype = topics[topic].msgtype
            if msgtype not in allowed:
                raise BagError(
                    f"{path}: --{role}-topic {topic!r} has type {msgtype}; "
                    f"supported: {', '.join(allowed)}"
                )
            types[role] = msgtype
        counts = {"rgb": topics[rgb_topic].msgcount, "thermal": topics[thermal_topic].msgcount}
    except BaseException:
        reader.close()
        raise
    return BagSource(path, bag_name(path), reader, types["rgb"], types["thermal"], counts)


def replay_pairs(
    source: BagSource, rgb_topic: str, thermal_topic: str, engine: PairingEngine, progress: bool
) -> Iterator[Pair]:
    """Push every message of the two topics in log-time order; yield each pair as it forms.

    Pair items are (deserialized message, msgtype). Storage errors met while reading (a
    corrupted page, a truncated chunk) become BagError naming the bag.
    """
    reader = source.reader
    connections = [c for c in reader.connections if c.topic in (rgb_topic, thermal_topic)]
    messages = reader.messages(connections=connections)
    total = source.counts["rgb"] + source.counts["thermal"]
    with tqdm(total=total, desc=source.name, unit="msg", disable=not progress) as bar:
        index = 0
        while True:
            try:
                item = next(messages, None)
                if item is None:
                    return
                connection, log_ns, raw = item
                msg = reader.deserialize(raw, connection.msgtype)
            except Exception as exc:  # rosbags surfaces storage damage as many exception types
                raise _StorageDamageError(
                    f"{source.path}: unreadable after message {index} "
                    f"(corrupted or truncated bag): {type(exc).__name__}: {exc}"
                ) from None
            index += 1
            bar.update()
            stream = "rgb" if connection.topic == rgb_topic else "thermal"
            engine.push(stream, _stamp_ns(msg), (msg, connection.msgtype))
            pair = engine.take_newest_pair(now_ns=max(int(log_ns), 0))
            if pair is not None:
                yield pair


def encode_image(image: np.ndarray, suffix: str) -> bytes:
    ok, buffer = cv2.imencode(suffix, image)
    if not ok:
        raise ValueError(f"image: OpenCV cannot encode {image.dtype} {image.shape} as {suffix}")
    return buffer.tobytes()


class DatasetWriter:
    """Writes pairs atomically into a new paired-folder dataset; the manifest comes last."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            raise ValueError(
                f"--out: {self.out} exists and is not an empty folder; choose a new one"
            )
        self.dirs = {name: self.out / name for name in ("rgb", "thermal", "labels")}
        self._created = [f for f in (self.out, *self.dirs.values()) if not f.exists()]
        for folder in self.dirs.values():
            folder.mkdir(parents=True, exist_ok=True)
        self.stems: list[str] = []

    def write_pair(
        self, stem: str, rgb: np.ndarray, thermal: np.ndarray, label_lines: Sequence[str]
    ) -> None:
        """rgb uint8 HxWx3 (RGB order); thermal raw HxW uint8/uint16/float32 of the same size."""
        label_text = "".join(f"{line}\n" for line in label_lines)
        files = [
            (self.dirs["labels"] / f"{stem}.txt", label_text.encode()),
            (
                self.dirs["thermal"] / f"{stem}{thermal_suffix(thermal)}",
                encode_image(thermal, thermal_suffix(thermal)),
            ),
            (self.dirs["rgb"] / f"{stem}.png", encode_image(rgb[:, :, ::-1], ".png")),
        ]
        temps = [final.with_name(f".{final.name}{_PARTIAL}") for final, _ in files]
        done: list[Path] = []
        try:
            for temp, (_, data) in zip(temps, files, strict=True):
                temp.write_bytes(data)
            # the RGB image goes last: the loader indexes pairs by it
            for temp, (final, _) in zip(temps, files, strict=True):
                temp.replace(final)
                done.append(final)
        except BaseException:
            for path in (*temps, *done):
                path.unlink(missing_ok=True)
            raise
        self.stems.append(stem)

    def abandon(self) -> None:
        """After a failure: remove the folders this writer created if they are still empty."""
        for folder in (*self.dirs.values(), self.out):
            if folder in self._created and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

    def finish(self, manifest: Mapping[str, Any], source: Mapping[str, Any]) -> None:
        """Write source.yaml, then manifest.yaml (each atomically)."""
        for name, data in ((SOURCE, source), (MANIFEST, manifest)):
            final = self.out / name
            temp = final.with_name(f".{name}{_PARTIAL}")
            temp.write_text(yaml.safe_dump(dict(data), sort_keys=False))
            temp.replace(final)


class PseudoLabeler:
    """Runs a checkpoint on each written pair and turns its detections into label lines
    (YOLO txt for horizontal models, DOTA txt for rotated ones) to bootstrap annotation.

    Thermal is normalized before registration, in pair order with the scheme's temporal state
    reset per bag, as the node feeds its model (with ``every`` > 1 the temporal state only
    sees the pairs that are written).
    """

    def __init__(
        self,
        checkpoint: str | Path,
        normalization: ThermalNormalizer,
        device: str = "auto",
        score_threshold: float = 0.5,
    ) -> None:
        from fusion_perception.engine import FusionEngine

        self.checkpoint = Path(checkpoint)
        self.engine = FusionEngine(checkpoint, device=device, score_threshold=score_threshold)
        self.class_names = list(self.engine.class_names)
        self.label_format = "dota" if self.engine.rotated else "yolo"
        self.score_threshold = score_threshold
        normalizer = ThermalNormalizer.from_dict(normalization.to_dict())
        self.pipeline = FramePipeline(self.engine, normalizer)
        self.objects = 0

    def reset(self) -> None:
        self.pipeline.reset()

    def label_lines(
        self, rgb: np.ndarray, thermal_raw: np.ndarray, registration: Registration | None
    ) -> list[str]:
        """rgb uint8 HxWx3; thermal_raw as decoded (before registration)."""
        self.pipeline.registration = registration
        detections = self.pipeline.run(rgb, thermal_raw).result.detections
        height, width = rgb.shape[:2]
        if self.label_format == "yolo":
            lines = yolo_lines(detections.boxes, detections.labels, width, height)
        else:
            lines = dota_lines(detections.boxes, detections.labels, self.class_names, width, height)
        self.objects += len(lines)
        return lines


def yolo_lines(boxes: np.ndarray, labels: np.ndarray, width: int, height: int) -> list[str]:
    """Horizontal boxes [N,5] (cx, cy, w, h, 0) in pixels -> 'class cx cy w h' normalised."""
    scale = np.array([width, height, width, height], np.float64)
    return [
        f"{int(label)} " + " ".join(f"{v:.6f}" for v in np.asarray(box[:4], np.float64) / scale)
        for box, label in zip(boxes, labels, strict=True)
    ]


def dota_lines(
    boxes: np.ndarray, labels: np.ndarray, class_names: Sequence[str], width: int, height: int
) -> list[str]:
    """Rotated boxes [N,5] in pixels -> 'x1 y1 ... x4 y4 class 0', corners clipped to the image
    (the loader rejects corners outside it); boxes left with < 1 px^2 are dropped."""
    import torch

    from fusion_perception.boxes import cxcywha_to_polygon

    if len(boxes) == 0:
        return []
    corners = cxcywha_to_polygon(torch.as_tensor(np.asarray(boxes), dtype=torch.float64)).numpy()
    corners[..., 0] = corners[..., 0].clip(0, width)
    corners[..., 1] = corners[..., 1].clip(0, height)
    lines = []
    for polygon, label in zip(corners, labels, strict=True):
        if cv2.contourArea(polygon.astype(np.float32)) < 1.0:
            continue
        name = class_names[int(label)].replace(" ", "_")
        lines.append(" ".join(f"{v:.2f}" for v in polygon.reshape(-1)) + f" {name} 0")
    return lines


@dataclass
class BagReport:
    """What one bag contributed; ``sync`` holds the pairing statistics."""

    path: str
    name: str
    rgb_type: str
    thermal_type: str
    messages: dict[str, int]
    pairs: int = 0
    written: int = 0
    sync: dict[str, Any] = field(default_factory=dict)
    complete: bool = True  # False: storage damage stopped the read part-way
    error: str | None = None


def sync_summary(engine: PairingEngine, dts_ns: Sequence[int]) -> dict[str, Any]:
    """Pairing statistics of one bag: per-stream counters and |dt| over all its pairs (ms)."""
    stats = engine.stats(now_ns=0)  # message ages mean nothing offline; only counters are used
    dts = np.abs(np.asarray(dts_ns, dtype=np.float64)) / 1e6
    streams = {
        name: {
            "received": s.received,
            "paired": s.paired,
            "evicted": s.evicted,
            "skipped": s.skipped,
            "stale": s.stale,
            "left_in_buffer": s.buffered,
            "rejected": {k: v for k, v in s.rejected.items() if v},
        }
        for name, s in stats.streams.items()
    }
    return {
        "pairs": stats.pairs,
        "stale_pairs": stats.stale_pairs,
        "dt_abs_mean_ms": round(float(dts.mean()), 4) if dts.size else None,
        "dt_abs_p95_ms": round(float(np.percentile(dts, 95)), 4) if dts.size else None,
        "dt_abs_max_ms": round(float(dts.max()), 4) if dts.size else None,
        "streams": streams,
    }


@dataclass
class ConversionResult:
    out: Path
    bags: list[BagReport]
    pairs_written: int
    objects: int
    manifest: dict[str, Any]
    source: dict[str, Any]

    @property
    def damaged(self) -> list[BagReport]:
        return [r for r in self.bags if not r.complete]


def convert_bags(
    bags: Sequence[str | Path],
    out: str | Path,
    rgb_topic: str,
    thermal_topic: str,
    *,
    normalization: ThermalNormalizer,
    every: int = 1,
    sync: SyncSettings | None = None,
    registration: Registration | None = None,
    classes: Sequence[str] | None = None,
    label_format: str = "yolo",
    pseudo_labeler: PseudoLabeler | None = None,
    progress: bool = True,
) -> ConversionResult:
    """Convert ``bags`` into a new paired-folder dataset at ``out`` (see the module docstring).

    ``normalization`` is recorded in the manifest (how the trainer maps the stored raw thermal
    to [0, 1]). ``classes``/``label_format`` describe the labels; with a ``pseudo_labeler`` they
    come from its checkpoint. Every bag is opened and checked before anything is written.
    """
    if not bags:
        raise ValueError("bags: at least one bag is required")
    if int(every) != every or every < 1:
        raise ValueError(f"--every: must be a positive integer, got {every!r}")
    job = _Job(
        rgb_topic,
        thermal_topic,
        int(every),
        sync or SyncSettings(),
        registration,
        pseudo_labeler,
        progress,
    )
    job.sync.engine()
    classes, label_format = _label_spec(classes, label_format, pseudo_labeler)
    sources = _open_all(bags, rgb_topic, thermal_topic)
    try:
        writer = DatasetWriter(out)
        reports = _write_all(sources, writer, job)
    finally:
        for source in sources:
            source.close()
    written = len(writer.stems)
    objects = pseudo_labeler.objects if pseudo_labeler else 0
    source = _source_dict(reports, job, normalization, written, objects)
    damaged = [r for r in reports if not r.complete]
    incomplete = (
        "INCOMPLETE: "
        + "; ".join(f"{r.name} is damaged ({r.written} pair(s) kept from it)" for r in damaged)
        + "; "
        if damaged
        else ""
    )
    manifest = {
        "format_version": 1,
        "classes": list(classes),
        "label_format": label_format,
        "thermal_normalization": normalization.to_dict(),
        "description": incomplete
        + (
            f"{written} RGB/thermal pairs from {len(reports)} rosbag2 recording(s) "
            f"({', '.join(r.name for r in reports)}) by fusion-bag2dataset; "
            + ("labels are pseudo-labels to review; " if pseudo_labeler else "labels are empty; ")
            + f"provenance in {SOURCE}"
        ),
    }
    writer.finish(manifest, source)
    result = ConversionResult(Path(out), reports, written, objects, manifest, source)
    if damaged:
        raise BagDamagedError(
            "; ".join(str(r.error) for r in damaged)
            + f"\n{out} holds the {written} complete pair(s) read from the undamaged parts, with "
            f"a manifest; {SOURCE} marks the damaged bag(s) 'complete: false'",
            result,
        )
    return result


@dataclass(frozen=True)
class _Job:
    """The settings every bag of one conversion shares."""

    rgb_topic: str
    thermal_topic: str
    every: int
    sync: SyncSettings
    registration: Registration | None
    labeler: PseudoLabeler | None
    progress: bool


def _open_all(bags: Sequence[str | Path], rgb_topic: str, thermal_topic: str) -> list[BagSource]:
    """Open and check every bag before anything is written; names are made unique."""
    sources: list[BagSource] = []
    try:
        for path in bags:
            sources.append(open_bag(path, rgb_topic, thermal_topic))
    except BaseException:
        for source in sources:
            source.close()
        raise
    names = [s.name for s in sources]
    for i, source in enumerate(sources):
        if names.count(source.name) > 1:
            source.name = f"{source.name}_{i}"
    return sources


def _write_all(sources: Sequence[BagSource], writer: DatasetWriter, job: _Job) -> list[BagReport]:
    """Convert every bag; on failure remove empty output folders and say what was kept."""
    try:
        reports = [_convert_one(source, writer, job) for source in sources]
        damaged = [r for r in reports if not r.complete]
        if damaged and not writer.stems:
            raise BagDamagedError(
                "; ".join(str(r.error) for r in damaged)
                + "\nno complete pair was read before the damage; nothing was written",
                None,
            )
        if not writer.stems:
            detail = "; ".join(
                f"{r.name}: {r.messages['rgb']} rgb / {r.messages['thermal']} thermal "
                f"messages, {r.pairs} pairs"
                for r in reports
            )
            raise BagError(
                f"no RGB/thermal pairs found within --slop {job.sync.slop} s ({detail}); "
                "check the topics, --slop and --thermal-offset"
            )
    except BaseException as exc:
        writer.abandon()
        if isinstance(exc, BagError) and writer.stems:
            raise BagError(
                f"{exc}\n{len(writer.stems)} complete pair(s) were written to {writer.out} "
                "before the error, without a manifest"
            ) from None
        raise
    return reports


def _label_spec(
    classes: Sequence[str] | None, label_format: str, labeler: PseudoLabeler | None
) -> tuple[list[str], str]:
    if labeler is not None:
        if classes is not None and list(classes) != labeler.class_names:
            raise ValueError(
                f"--classes: {list(classes)} differ from the pseudo-label checkpoint's "
                f"{labeler.class_names}; leave --classes out to use the checkpoint's"
            )
        return labeler.class_names, labeler.label_format
    if not classes:
        raise ValueError(
            "--classes: required without --pseudo-labels (the manifest must list the classes)"
        )
    if label_format not in LABEL_FORMATS:
        raise ValueError(f"--label-format: {label_format!r} is not one of {LABEL_FORMATS}")
    return list(classes), label_format


def _convert_one(source: BagSource, writer: DatasetWriter, job: _Job) -> BagReport:
    report = BagReport(
        str(source.path.resolve()),
        source.name,
        source.rgb_type,
        source.thermal_type,
        dict(source.counts),
    )
    engine = job.sync.engine()
    if job.labeler is not None:
        job.labeler.reset()
    dts: list[int] = []
    try:
        for pair in replay_pairs(source, job.rgb_topic, job.thermal_topic, engine, job.progress):
            dts.append(pair.dt_ns)
            _write_one(pair, source, writer, job, report)
    except _StorageDamageError as exc:
        # Keep what was read before the damage; the caller records it and goes on.
        report.complete, report.error = False, str(exc)
        log.error("%s; keeping the %d pair(s) written from it", exc, report.written)
    report.sync = sync_summary(engine, dts)
    log.info(
        "%s: %d rgb + %d thermal messages -> %d pairs (|dt| mean %s ms, p95 %s ms), %d written",
        source.name,
        report.messages["rgb"],
        report.messages["thermal"],
        report.pairs,
        report.sync["dt_abs_mean_ms"],
        report.sync["dt_abs_p95_ms"],
        report.written,
    )
    return report


def _write_one(
    pair: Pair, source: BagSource, writer: DatasetWriter, job: _Job, report: BagReport
) -> None:
    """Decode, register, label and write one pair (every ``job.every``-th one)."""
    report.pairs += 1
    if (report.pairs - 1) % job.every:
        return
    (rgb_msg, _), (thermal_msg, _) = pair.rgb, pair.thermal
    try:
        rgb = decode_rgb(rgb_msg, job.rgb_topic)
        raw = decode_thermal(thermal_msg, job.thermal_topic)
        registered = _register(raw, rgb, job.registration)
    except (ImageEncodingError, ValueError) as exc:
        raise BagError(f"{source.path}: pair at RGB stamp {pair.rgb_stamp_ns} ns: {exc}") from None
    labeler = job.labeler
    lines = labeler.label_lines(rgb, raw, job.registration) if labeler is not None else []
    writer.write_pair(f"{source.name}_{pair.rgb_stamp_ns:019d}", rgb, registered, lines)
    report.written += 1


def _register(raw: np.ndarray, rgb: np.ndarray, registration: Registration | None) -> np.ndarray:
    """Raw thermal in the RGB frame (same dtype); without a calibration sizes must agree."""
    rgb_size = (rgb.shape[1], rgb.shape[0])
    if registration is None:
        if (raw.shape[1], raw.shape[0]) != rgb_size:
            raise ValueError(
                f"thermal {raw.shape[1]}x{raw.shape[0]} and RGB {rgb_size[0]}x{rgb_size[1]} "
                "differ in size; pass --calibration to register thermal into the RGB frame"
            )
        return raw
    if rgb_size != registration.rgb_size:
        raise ValueError(
            f"RGB size {rgb_size} differs from the calibration's rgb_size {registration.rgb_size}"
        )
    registered, _ = registration.warp(raw)
    return registered


def _source_dict(
    reports: Sequence[BagReport],
    job: _Job,
    normalization: ThermalNormalizer,
    written: int,
    objects: int,
) -> dict[str, Any]:
    labeler = job.labeler
    pseudo = None
    if labeler is not None:
        pseudo = {
            "checkpoint": str(labeler.checkpoint.resolve()),
            "sha256": file_sha256(labeler.checkpoint),
            "score_threshold": labeler.score_threshold,
            "label_format": labeler.label_format,
            "objects": objects,
        }
    return {
        "tool": "fusion-bag2dataset",
        "fusion_perception_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "topics": {"rgb": job.rgb_topic, "thermal": job.thermal_topic},
        "calibration": job.registration.to_dict() if job.registration is not None else None,
        "thermal_normalization": normalization.to_dict(),
        "sync": asdict(job.sync),
        "every": job.every,
        "pseudo_labels": pseudo,
        "counts": {
            "bags": len(reports),
            "pairs": sum(r.pairs for r in reports),
            "written": written,
            "objects": objects,
        },
        "bags": [asdict(r) for r in reports],
    }
