"""What the node's configure transition builds from its parameters: the engine (checkpoint +
backend), the frame pipeline (thermal normalization, registration, tracker) and the live input
(pairing and its policies). Every failure is a ValueError naming the parameter at fault."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusion_perception.backends import BackendError
from fusion_perception.checkpoint import CheckpointError
from fusion_perception.compensation import Compensation, CompensationError, load_compensation
from fusion_perception.engine import FusionEngine, select_device
from fusion_perception.live import ErrorLog, LiveInput
from fusion_perception.pipeline import FramePipeline
from fusion_perception.registration import Registration
from fusion_perception.ros import params as node_params
from fusion_perception.tracking import IoUTracker


def default_checkpoint(name: str = "demo.pt") -> Path:
    """A model file installed with the package (share/fusion_perception/models/NAME): the demo
    model, or ``demo_compensation.pt``, its compensation for a visible-only detector."""
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("fusion_perception")) / "models" / name


def _compensation(p: dict[str, Any]) -> Compensation | None:
    if p["fusion_task"] == "viewer":
        return None
    path = p["compensation"] or str(default_checkpoint("demo_compensation.pt"))
    try:
        return load_compensation(path)
    except CompensationError as exc:
        raise ValueError(f"parameter compensation: {exc}") from None


@dataclass
class Runtime:
    checkpoint: str
    engine: FusionEngine
    pipeline: FramePipeline
    live: LiveInput


def build_runtime(p: dict[str, Any], errors: ErrorLog) -> Runtime:
    """Engine, pipeline and live input from the node's parameter values."""
    checkpoint = p["checkpoint"] or str(default_checkpoint())
    if p["sync.backend"] == "message_filters":
        try:
            import message_filters  # noqa: F401
        except ImportError:
            raise ValueError(
                "parameter sync.backend: message_filters is not importable here (apt: "
                "ros-$ROS_DISTRO-message-filters; it has no PyPI wheel); use "
                "sync.backend builtin"
            ) from None
    compensation = _compensation(p)
    try:
        select_device(p["device"])
        engine = FusionEngine(
            checkpoint,
            device=p["device"],
            fp16=p["fp16"] and p["device"] != "cpu" and _cuda_available(),
            score_threshold=p["score_threshold"],
            nms_threshold=p["nms_threshold"],
            max_detections=p["max_detections"],
            backend=p["backend"],
            artifact=p["backend_artifact"] or None,
            classes=node_params.class_list(p["classes"]),
            agnostic_nms=p["agnostic_nms"],
            compensation=compensation,
        )
    except CompensationError as exc:  # made for another fusion checkpoint
        raise ValueError(f"parameter compensation: {exc}") from None
    except CheckpointError as exc:
        raise ValueError(f"parameter checkpoint: {exc}") from None
    except BackendError as exc:
        name = "backend_artifact" if p["backend_artifact"] else "backend"
        raise ValueError(f"parameter {name}: {exc}") from None
    except ValueError as exc:  # named by the engine (e.g. "classes: ...", "device: ...")
        raise ValueError(f"parameter {exc}") from None
    try:
        registration = (
            Registration.from_yaml(p["calibration_file"]) if p["calibration_file"] else None
        )
    except (OSError, ValueError) as exc:
        raise ValueError(f"parameter calibration_file: {exc}") from None
    thermal = node_params.settings(p, "thermal")
    tracker = IoUTracker(node_params.settings(p, "tracking")) if p["tracking.enabled"] else None
    pipeline = FramePipeline(
        engine, thermal.normalizer(engine.checkpoint.thermal_normalization), registration, tracker
    )
    live = LiveInput(
        node_params.settings(p, "sync"),
        errors,
        p["camera_timeout"],
        p["fallback"],
        p["pair_policy"],
    )
    return Runtime(checkpoint, engine, pipeline, live)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
