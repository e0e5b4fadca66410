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
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from fusion_perception import __version__
from fusion_perception.image_codec import ImageEncodingError
from fusion_perception.pairing import Pair, PairingEngine, SyncConfig
from fusion_perception.pipeline import decode_rgb_message, decode_thermal_message, decoded
from fusion_perception.registration import Registration
from fusion_perception.schema import read_yaml_mapping
from fusion_perception.thermal import ThermalNormalizer
from fusion_training.bags import (
    BagError,
    BagSource,
    StorageDamageError,
    file_sha256,
    open_bag,
    replay_pairs,
)
from fusion_training.dataset_writer import SOURCE, DatasetWriter
from fusion_training.datasets.folder import LABEL_FORMATS
from fusion_training.pseudo_labels import PseudoLabeler

log = logging.getLogger(__name__)


class BagDamagedError(BagError):
    """Some bags were damaged part-way; ``result`` describes the dataset written from the rest
    (manifest included), or is None when nothing could be written."""

    def __init__(self, message: str, result: ConversionResult | None) -> None:
        super().__init__(message)
        self.result = result


# Offline, max_age is off: it would compare stamps with the recorder's log time, which comes
# from another clock when the cameras stamp with their own.
OFFLINE_SYNC = SyncConfig(max_age=None)


def sync_from_node_params(path: str | Path) -> SyncConfig:
    """The ``sync.*`` values of a node parameter file (``<node>: ros__parameters: sync:``).

    Its ``max_age`` is not taken over (see OFFLINE_SYNC), nor its ``backend``: offline
    pairing is always the builtin engine.
    """
    data = read_yaml_mapping(path, "--params", ValueError)
    nodes = [
        v["ros__parameters"]
        for v in data.values()
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
    known = {f.name for f in fields(SyncConfig)} | {"backend"}
    unknown = sorted(set(sync) - known)
    if unknown:
        raise ValueError(f"--params: {path}: unknown sync parameter(s) {unknown}")
    values = {k: v for k, v in sync.items() if k not in ("max_age", "backend")}
    try:
        settings = replace(OFFLINE_SYNC, **values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"--params: {path}: sync: {exc}") from exc
    return settings


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
    sync: SyncConfig = OFFLINE_SYNC,
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
        sync,
        registration,
        pseudo_labeler,
        progress,
    )
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
    sync: SyncConfig
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
    except StorageDamageError as exc:
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
    try:
        rgb, raw = _decode(pair, job)
        registered = _register(raw, rgb, job.registration)
    except (ImageEncodingError, ValueError) as exc:
        raise BagError(f"{source.path}: pair at RGB stamp {pair.rgb_stamp_ns} ns: {exc}") from None
    labeler = job.labeler
    lines = labeler.label_lines(rgb, raw, job.registration) if labeler is not None else []
    writer.write_pair(f"{source.name}_{pair.rgb_stamp_ns:019d}", rgb, registered, lines)
    report.written += 1


def _decode(pair: Pair, job: _Job) -> tuple[np.ndarray, np.ndarray]:
    """A pair's RGB (uint8 HxWx3, RGB order) and raw thermal (native byte order); encoding
    errors name the topic."""
    (rgb_msg, _), (thermal_msg, _) = pair.rgb, pair.thermal
    rgb = decoded(job.rgb_topic, decode_rgb_message, rgb_msg)
    raw, _ = decoded(job.thermal_topic, decode_thermal_message, thermal_msg)
    return rgb, raw


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
