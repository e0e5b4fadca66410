"""Persistent object ids across frames: a ByteTrack-style IoU tracker.

Each track predicts its box one frame ahead (constant velocity of the box centre), then the
frame's detections are matched to the predictions in two rounds with an optimal assignment
(`scipy.optimize.linear_sum_assignment` on 1 - IoU): first the confident detections against every
live track, then the less confident ones against the tracks still unmatched (ByteTrack's idea: a
person half hidden behind a car scores low but is still the same person). A track must be matched
`min_hits` frames in a row before it gets an id, and survives `max_lost` frames without a match
(an occlusion) before it is dropped. Classes never mix: a box only continues a track of its class.

The tracker only names detections: it never adds, moves or removes one. Rotated boxes are matched
by the IoU of their axis-aligned envelopes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_iou

from fusion_perception.boxes import enclosing_xyxy
from fusion_perception.engine import Detections
from fusion_perception.settings import check_fields, setting


@dataclass(frozen=True)
class TrackerConfig:
    """Association settings; each field is also a node parameter ``tracking.<field>``."""

    high_score: float = setting(
        0.5,
        "detections at or above this score start tracks and are matched first",
        low=0.0,
        high=1.0,
    )
    match_iou: float = setting(
        0.3, "minimum IoU of a detection with a track's predicted box", low=0.01, high=1.0
    )
    min_hits: int = setting(
        2, "frames a new track must be matched before it gets an id", low=1, high=100
    )
    max_lost: int = setting(
        15, "frames a track survives without a match (occlusion)", low=0, high=1000
    )

    def __post_init__(self) -> None:
        check_fields(self, "tracking")


@dataclass
class Track:
    id: int  # assigned when confirmed; -1 before
    label: int
    box: np.ndarray  # [5] cx, cy, w, h, angle: the last matched box
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # centre px / frame
    hits: int = 1
    lost: int = 0

    def predicted(self) -> np.ndarray:
        box = self.box.copy()
        box[:2] += self.velocity * (self.lost + 1)
        return box

    def update(self, box: np.ndarray) -> None:
        step = (box[:2] - self.box[:2]) / (self.lost + 1)
        # smooth the velocity; the first match sets it
        self.velocity = step if self.hits == 1 else 0.5 * self.velocity + 0.5 * step
        self.box, self.hits, self.lost = box.copy(), self.hits + 1, 0


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU [len(a), len(b)] of (cx, cy, w, h, angle) boxes, by their axis-aligned envelopes."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    envelopes = [enclosing_xyxy(torch.as_tensor(x, dtype=torch.float64)) for x in (a, b)]
    return box_iou(*envelopes).numpy()


def _assign(
    tracks: list[Track], boxes: np.ndarray, labels: np.ndarray, min_iou: float
) -> list[tuple[int, int]]:
    """Optimal (track, detection) pairs with IoU >= min_iou and equal class."""
    if not tracks or len(boxes) == 0:
        return []
    predicted = np.stack([t.predicted() for t in tracks])
    iou = iou_matrix(predicted, boxes)
    same = np.array([t.label for t in tracks])[:, None] == labels[None, :]
    iou = np.where(same, iou, 0.0)
    rows, cols = linear_sum_assignment(1.0 - iou)
    return [(r, c) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= min_iou]


class IoUTracker:
    """`update(detections)` once per frame -> the same detections with ``ids`` (-1: none yet)."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self.tracks: list[Track] = []
        self.next_id = 1
        self.frames = 0

    def reset(self) -> None:
        """Forget every track (a clock jump, a new stream); ids keep counting up."""
        self.tracks = []

    def update(self, detections: Detections) -> Detections:
        cfg = self.config
        self.frames += 1
        n = len(detections)
        ids = np.full(n, -1, dtype=np.int64)
        boxes = np.asarray(detections.boxes, dtype=np.float64).reshape(-1, 5)
        labels = np.asarray(detections.labels, dtype=np.int64)
        confident = np.asarray(detections.scores) >= cfg.high_score
        matched_tracks: set[int] = set()
        matched_dets: set[int] = set()
        # round 1: confident detections against every live track; round 2: the rest of both
        for chosen in (np.flatnonzero(confident), np.flatnonzero(~confident)):
            free = [i for i, _ in enumerate(self.tracks) if i not in matched_tracks]
            candidates = [self.tracks[i] for i in free]
            pairs = _assign(candidates, boxes[chosen], labels[chosen], cfg.match_iou)
            for r, c in pairs:
                track, det = self.tracks[free[r]], int(chosen[c])
                track.update(boxes[det])
                matched_tracks.add(free[r])
                matched_dets.add(det)
                if track.id < 0 and track.hits >= cfg.min_hits:
                    track.id, self.next_id = self.next_id, self.next_id + 1
                ids[det] = track.id
        survivors = []
        for i, track in enumerate(self.tracks):
            if i not in matched_tracks:
                track.lost += 1
                if track.id < 0 or track.lost > cfg.max_lost:
                    continue  # an unconfirmed track dies at its first miss
            survivors.append(track)
        for det in np.flatnonzero(confident):
            if int(det) not in matched_dets:
                track = Track(-1, int(labels[det]), boxes[det].copy())
                if cfg.min_hits <= 1:
                    track.id, self.next_id = self.next_id, self.next_id + 1
                    ids[det] = track.id
                survivors.append(track)
        self.tracks = survivors
        return Detections(detections.boxes, detections.scores, detections.labels, ids)
