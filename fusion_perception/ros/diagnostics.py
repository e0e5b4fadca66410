"""The node's /diagnostics: one pipeline status (lifecycle state, rates, counters, timings,
errors by kind) and one status per camera, built from what `fusion_perception.live` reports."""

from __future__ import annotations

from collections.abc import Mapping

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import CameraInfo

from fusion_perception.engine import FusionEngine
from fusion_perception.live import ErrorLog, FrameStats, LiveHealth
from fusion_perception.ros.messages import diagnostic_status

OK, WARN, ERROR = DiagnosticStatus.OK[0], DiagnosticStatus.WARN[0], DiagnosticStatus.ERROR[0]


def idle_statuses(
    name: str, fqn: str, state: str, processed: int, configure_error: str
) -> list[DiagnosticStatus]:
    """Nothing runs (not active): say so, and why when configure failed."""
    values: dict[str, object] = {"state": state, "processed_pairs": processed}
    message = f"lifecycle state: {state}"
    if state == "unconfigured" and configure_error:
        values["configure_error"] = configure_error
        message += f" (configure failed: {configure_error})"
    level = ERROR if configure_error else OK
    return [diagnostic_status(f"{name}: pipeline", fqn, level, message, values)]


def active_statuses(
    name: str,
    fqn: str,
    health: LiveHealth,
    topics: Mapping[str, str],
    engine: FusionEngine,
    camera_info: CameraInfo | None,
    stats: FrameStats,
    errors: ErrorLog,
    images_skipped: int,
) -> list[DiagnosticStatus]:
    values: dict[str, object] = {
        "state": "active",
        "processed_pairs": stats.processed,
        "device": engine.device,
        "backend": engine.backend.name,
        "camera_info": (
            f"{camera_info.width}x{camera_info.height}" if camera_info else "none received"
        ),
        **health.values,
        **stats.values(),
        "images_skipped": images_skipped,
    }
    if engine.device.type == "cuda":
        import torch

        values["gpu_memory_mb"] = f"{torch.cuda.memory_allocated(engine.device) / 2**20:.1f}"
    # a copy: the worker and the image thread may count a new kind meanwhile
    values.update({f"errors.{kind}": count for kind, count in dict(errors.counts).items()})
    level = OK if health.ok else WARN
    statuses = [diagnostic_status(f"{name}: pipeline", fqn, level, health.message, values)]
    for stream, camera in health.cameras.items():
        statuses.append(
            diagnostic_status(
                f"{name}: {stream} camera",
                topics[stream],
                OK if camera.ok else WARN,
                camera.text,
                camera.values,
            )
        )
    return statuses


def diagnostic_array(statuses: list[DiagnosticStatus], stamp) -> DiagnosticArray:
    array = DiagnosticArray(status=statuses)
    array.header.stamp = stamp
    return array
