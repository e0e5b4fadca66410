"""Builders for the node's output messages (the message contract in the README)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from std_msgs.msg import Header
from vision_msgs.msg import (
    BoundingBox2D,
    Detection2D,
    Detection2DArray,
    LabelInfo,
    ObjectHypothesisWithPose,
    VisionClass,
)

from fusion_perception.engine import Detections


def detections_to_msg(header: Header, detections: Detections) -> Detection2DArray:
    """Boxes in RGB pixels; class_id is the class index as a string, matching LabelInfo; id is
    the tracker's persistent object id as a string (empty when untracked or not confirmed yet)."""
    out = Detection2DArray(header=header)
    ids = detections.ids if detections.ids is not None else np.full(len(detections), -1)
    for box, score, label, track in zip(
        detections.boxes, detections.scores, detections.labels, ids, strict=True
    ):
        det = Detection2D(header=header, id=str(int(track)) if track >= 0 else "")
        det.bbox = BoundingBox2D()
        det.bbox.center.position.x = float(box[0])
        det.bbox.center.position.y = float(box[1])
        det.bbox.center.theta = float(box[4])
        det.bbox.size_x = float(box[2])
        det.bbox.size_y = float(box[3])
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = str(int(label))
        hypothesis.hypothesis.score = float(score)
        # Consumers that ignore bbox still find the centre here.
        hypothesis.pose.pose.position.x = float(box[0])
        hypothesis.pose.pose.position.y = float(box[1])
        det.results.append(hypothesis)
        out.detections.append(det)
    return out


def label_info_msg(header: Header, class_names: Sequence[str], threshold: float) -> LabelInfo:
    msg = LabelInfo(header=header, threshold=float(threshold))
    msg.class_map = [VisionClass(class_id=i, class_name=name) for i, name in enumerate(class_names)]
    return msg


def diagnostic_status(
    name: str, hardware_id: str, level: int, message: str, values: Mapping[str, object]
) -> DiagnosticStatus:
    return DiagnosticStatus(
        level=bytes([level]),
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
    )
