"""The IoU tracker on synthetic tracks that cross, hide and reappear: ids persist, id switches are
counted, and the tracker never changes the detections themselves."""

from __future__ import annotations

import numpy as np
import pytest

from fusion_perception.engine import Detections
from fusion_perception.tracking import IoUTracker, TrackerConfig

PERSON, CAR = 0, 1


def scene(frames: int = 60, seed: int = 0):
    """Per frame: (Detections, ground-truth object per detection, -1 for clutter).

    Object 0 walks right, object 1 walks left on nearly the same line (they cross at frame 30);
    object 2 (a car) drives down and is hidden for frames 20-27 (scoring low just before and
    after); one-frame clutter boxes pop up at random places."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(frames):
        boxes, scores, labels, truth = [], [], [], []
        objects = [
            (0, PERSON, 100 + 8 * t, 240, 40, 80, 0.9),
            (1, PERSON, 580 - 8 * t, 250, 40, 80, 0.85),
        ]
        if not 20 <= t <= 27:
            score = 0.35 if t in (18, 19, 28, 29) else 0.9  # partly hidden: a weak detection
            objects.append((2, CAR, 320, 60 + 5 * t, 90, 50, score))
        for gt, label, cx, cy, w, h, score in objects:
            boxes.append([cx + rng.normal(0, 1.5), cy + rng.normal(0, 1.5), w, h, 0.0])
            scores.append(score)
            labels.append(label)
            truth.append(gt)
        if t % 7 == 3:  # clutter: a confident box for one frame only
            boxes.append([rng.uniform(50, 600), rng.uniform(50, 450), 30, 30, 0.0])
            scores.append(0.6)
            labels.append(PERSON)
            truth.append(-1)
        order = rng.permutation(len(boxes))  # detections come in no particular order
        dets = Detections(
            np.asarray(boxes, np.float32)[order],
            np.asarray(scores, np.float32)[order],
            np.asarray(labels, np.int64)[order],
        )
        out.append((dets, np.asarray(truth)[order]))
    return out


def run(tracker: IoUTracker, frames):
    """Feed every frame; returns {ground-truth object: [id per frame it had one]}, clutter ids."""
    ids: dict[int, list[int]] = {}
    clutter = []
    for dets, truth in frames:
        tracked = tracker.update(dets)
        np.testing.assert_array_equal(tracked.boxes, dets.boxes)  # never moved or dropped
        np.testing.assert_array_equal(tracked.scores, dets.scores)
        assert tracked.ids.shape == (len(dets),)
        for gt, track_id in zip(truth, tracked.ids, strict=True):
            if gt < 0:
                clutter.append(int(track_id))
            elif track_id >= 0:
                ids.setdefault(int(gt), []).append(int(track_id))
    return ids, clutter


def id_switches(ids: dict[int, list[int]]) -> int:
    return sum(int(np.count_nonzero(np.diff(seq))) for seq in ids.values())


def test_crossing_and_occluded_objects_keep_their_ids():
    ids, clutter = run(IoUTracker(), scene())
    assert id_switches(ids) == 0
    assert sorted(ids) == [0, 1, 2]
    assert len({seq[0] for seq in ids.values()}) == 3  # three objects, three ids
    # every object is named in nearly every frame it is seen (not before min_hits)
    assert len(ids[0]) >= 58 and len(ids[1]) >= 58
    assert len(ids[2]) >= 60 - 8 - 2  # hidden 8 frames, unnamed for the first one
    assert set(clutter) == {-1}  # one-frame clutter never earns an id


def test_a_tracker_that_forgets_at_once_loses_the_car_behind_the_occlusion():
    ids, _ = run(IoUTracker(TrackerConfig(max_lost=0)), scene())
    assert id_switches({2: ids[2]}) == 1  # what the switch count catches


def test_low_score_detections_continue_tracks_but_never_start_them():
    config = TrackerConfig(min_hits=1)
    tracker = IoUTracker(config)
    weak = Detections(np.array([[50, 50, 20, 20, 0]], np.float32), np.array([0.2]), np.array([0]))
    assert tracker.update(weak).ids.tolist() == [-1]
    strong = Detections(weak.boxes, np.array([0.9]), weak.labels)
    first = tracker.update(strong).ids.tolist()
    assert first[0] >= 1
    assert tracker.update(weak).ids.tolist() == first  # the weak box continues the track


def test_classes_never_share_a_track():
    tracker = IoUTracker(TrackerConfig(min_hits=1))
    box = np.array([[100, 100, 40, 40, 0.0], [100, 100, 40, 40, 0.0]], np.float32)
    for _ in range(3):
        out = tracker.update(Detections(box, np.array([0.9, 0.9]), np.array([PERSON, CAR])))
        assert out.ids[0] != out.ids[1] and min(out.ids) >= 1
    swapped = tracker.update(Detections(box, np.array([0.9, 0.9]), np.array([CAR, PERSON])))
    assert swapped.ids.tolist() == out.ids[::-1].tolist()


def test_rotated_boxes_and_empty_frames():
    tracker = IoUTracker(TrackerConfig(min_hits=1, max_lost=1))
    box = np.array([[200, 200, 80, 20, 0.7]], np.float32)
    first = tracker.update(Detections(box, np.array([0.9]), np.array([0]))).ids[0]
    empty = Detections(np.zeros((0, 5), np.float32), np.zeros(0), np.zeros(0, np.int64))
    assert tracker.update(empty).ids.shape == (0,)
    moved = box + np.array([[4, 2, 0, 0, 0.02]], np.float32)
    assert tracker.update(Detections(moved, np.array([0.9]), np.array([0]))).ids[0] == first
    tracker.update(empty)
    tracker.update(empty)  # lost longer than max_lost: the track is gone
    assert tracker.update(Detections(moved, np.array([0.9]), np.array([0]))).ids[0] > first
    tracker.reset()
    assert tracker.tracks == []


@pytest.mark.parametrize(
    ("key", "value"), [("high_score", 1.5), ("match_iou", 0.0), ("min_hits", 0), ("max_lost", -1)]
)
def test_settings_out_of_range_name_their_key(key, value):
    with pytest.raises(ValueError, match=rf"tracking\.{key}: {value} is outside"):
        TrackerConfig(**{key: value})
