"""fusion_node: synchronized RGB + thermal in, fused image + Detection2DArray out.

Subscription callbacks only hand messages to the pairing engine; one worker thread takes the newest
matched pair, runs the network and publishes. When the cameras outrun the model, pairs are skipped and
counted, never queued, so the output age stays bounded.
"""

from __future__ import annotations

import copy
import sys
import threading
import time
from pathlib import Path
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from fusion_perception.annotate import draw_detections
from fusion_perception.backends import BackendError
from fusion_perception.checkpoint import CheckpointError
from fusion_perception.engine import FusionEngine, select_device
from fusion_perception.live import ErrorLog, FrameStats, LiveInput
from fusion_perception.pairing import STREAMS, Pair
from fusion_perception.pipeline import FrameError, FramePipeline
from fusion_perception.registration import Registration
from fusion_perception.ros import params as node_params
from fusion_perception.ros.image_conversions import image_to_msg
from fusion_perception.ros.messages import detections_to_msg, diagnostic_status, label_info_msg
from fusion_perception.ros.qos import watch_subscription
from fusion_perception.ros.spin import spin_node
from fusion_perception.tracking import IoUTracker

OK, WARN, ERROR = DiagnosticStatus.OK[0], DiagnosticStatus.WARN[0], DiagnosticStatus.ERROR[0]


def default_checkpoint() -> Path:
    """The demo model installed with the package (share/fusion_perception/models/demo.pt)."""
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("fusion_perception")) / "models" / "demo.pt"


class FusionNode(LifecycleNode):
    """A managed (lifecycle) node. configure loads the checkpoint and backend and creates the
    publishers; activate subscribes and starts the worker; deactivate stops all output; cleanup
    releases the model and its (GPU) memory. With ``autostart`` (the default) it configures and
    activates itself, so ``ros2 run`` works without a lifecycle manager. Diagnostics are
    published in every state and say which one.

    The work is ROS-free: `fusion_perception.live` pairs and watches the streams,
    `fusion_perception.pipeline` turns a pair into results; this class only wires them to
    parameters, subscriptions, publishers and /diagnostics."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("fusion_node", **kwargs)
        self.p = node_params.declare_and_read(self)
        self.engine: FusionEngine | None = None
        self.state = "unconfigured"
        self._configure_error = ""
        self._inputs: list[Any] = []  # subscriptions, alive while active
        self._outputs: list[Any] = []  # publishers, alive while configured
        self._running = False
        self._worker: threading.Thread | None = None
        logger = self.get_logger()
        self.errors = ErrorLog(logger.warning, logger.error)
        self.stats = FrameStats()
        self._camera_info: CameraInfo | None = None  # the RGB camera's newest
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(self.p["diagnostics_period"], self._publish_diagnostics)
        if self.p["autostart"]:
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise ValueError(self._configure_error or "configure failed")
            self.trigger_activate()

    # -- lifecycle transitions
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._load()
        except ValueError as exc:
            self._configure_error = str(exc)
            self.get_logger().error(f"configure failed: {exc}")
            self._release_model()
            return TransitionCallbackReturn.FAILURE
        self._create_publishers()
        self._configure_error = ""
        self.state = "inactive"
        checkpoint = self.p["checkpoint"] or str(default_checkpoint())
        self.get_logger().info(
            f"configured: {checkpoint} on {self.engine.device} ({self.engine.backend.name} "
            f"backend, {'rotated' if self.engine.rotated else 'horizontal'} boxes, "
            f"classes {', '.join(self.engine.class_names)}"
            f"{'; publishing ' + self.p['classes'] if self.p['classes'] else ''}"
            f"{'; tracking' if self.pipeline.tracker else ''})"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._create_subscriptions()
        header = Header(stamp=self.get_clock().now().to_msg())
        self.pub_label_info.publish(
            label_info_msg(header, self.engine.class_names, self.engine.score_threshold)
        )
        self.live.reset()
        self._running = True
        self._worker = threading.Thread(target=self._work, name="fusion_worker", daemon=True)
        self._worker.start()
        self.state = "active"
        self.get_logger().info(
            f"active: rgb={self.resolve_topic_name(self.p['rgb_topic'])} "
            f"thermal={self.resolve_topic_name(self.p['thermal_topic'])}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop()
        self.state = "inactive"
        self.get_logger().info("inactive: no subscriptions, no output")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_publishers()
        self._release_model()
        self.state = "unconfigured"
        self.get_logger().info("cleaned up: model released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop()
        self._destroy_publishers()
        self._release_model()
        self.state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.on_shutdown(state)
        self.state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def _load(self) -> None:
        """Engine, pipeline and live input from the parameters; a ValueError names the
        parameter at fault."""
        checkpoint = self.p["checkpoint"] or str(default_checkpoint())
        if self.p["sync.backend"] == "message_filters":
            try:
                import message_filters  # noqa: F401
            except ImportError:
                raise ValueError(
                    "parameter sync.backend: message_filters is not importable here (apt: "
                    "ros-$ROS_DISTRO-message-filters; it has no PyPI wheel); use "
                    "sync.backend builtin"
                ) from None
        try:
            select_device(self.p["device"])
            self.engine = FusionEngine(
                checkpoint,
                device=self.p["device"],
                fp16=self.p["fp16"] and self.p["device"] != "cpu" and _cuda_available(),
                score_threshold=self.p["score_threshold"],
                nms_threshold=self.p["nms_threshold"],
                max_detections=self.p["max_detections"],
                backend=self.p["backend"],
                artifact=self.p["backend_artifact"] or None,
                classes=node_params.class_list(self.p["classes"]),
                agnostic_nms=self.p["agnostic_nms"],
            )
        except CheckpointError as exc:
            raise ValueError(f"parameter checkpoint: {exc}") from None
        except BackendError as exc:
            name = "backend_artifact" if self.p["backend_artifact"] else "backend"
            raise ValueError(f"parameter {name}: {exc}") from None
        except ValueError as exc:  # named by the engine (e.g. "classes: ...", "device: ...")
            raise ValueError(f"parameter {exc}") from None
        tracking = node_params.settings(self.p, "tracking")
        try:
            registration = (
                Registration.from_yaml(self.p["calibration_file"])
                if self.p["calibration_file"]
                else None
            )
        except (OSError, ValueError) as exc:
            raise ValueError(f"parameter calibration_file: {exc}") from None
        normalizer = node_params.settings(self.p, "thermal").normalizer(
            self.engine.checkpoint.thermal_normalization
        )
        self.pipeline = FramePipeline(
            self.engine,
            normalizer,
            registration,
            IoUTracker(tracking) if self.p["tracking.enabled"] else None,
        )
        self.live = LiveInput(
            node_params.settings(self.p, "sync"),
            self.errors,
            self.p["camera_timeout"],
            self.p["fallback"],
        )

    def _stop(self) -> None:
        """Stop the worker and drop the subscriptions (no input, so no output)."""
        self._running = False
        if self._worker is not None and self._worker.is_alive():
            self._worker.join(timeout=5.0)
        self._worker = None
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        self._inputs = []
        if self.engine is not None:
            self.live.reset()

    def _release_model(self) -> None:
        """Drop the engine; on CUDA hand its memory back to the driver."""
        engine, self.engine, self.pipeline = self.engine, None, None
        if engine is not None and engine.device.type == "cuda":
            import torch

            del engine
            torch.cuda.empty_cache()

    def _qos(self, stream: str) -> QoSProfile:
        reliability = self.p[f"{stream}_qos.reliability"]
        return QoSProfile(
            depth=self.p[f"{stream}_qos.depth"],
            reliability=ReliabilityPolicy.RELIABLE
            if reliability == "reliable"
            else ReliabilityPolicy.BEST_EFFORT,
        )

    def _create_subscriptions(self) -> None:
        types = {
            stream: CompressedImage if self.p[f"{stream}_compressed"] else Image
            for stream in STREAMS
        }
        if self.p["sync.backend"] == "message_filters":
            self._create_synchronizer(types)
        else:
            for stream, msg_type in types.items():
                qos, topic = self._qos(stream), self.p[f"{stream}_topic"]
                self._inputs.append(
                    self.create_subscription(
                        msg_type,
                        topic,
                        lambda msg, s=stream: self._on_image(s, msg),
                        qos,
                        event_callbacks=watch_subscription(
                            self, topic, qos, lambda n, s=stream: self._on_lost(s, n)
                        ),
                    )
                )
        self._inputs.append(
            self.create_subscription(
                CameraInfo,
                node_params.camera_info_topic(self.p),
                self._on_camera_info,
                self._qos("rgb"),
            )
        )

    def _create_synchronizer(self, types: dict[str, type]) -> None:
        """message_filters pairs the streams; each matched pair then goes through the builtin
        engine too (same slop, so it pairs them alike), which keeps the counters and diagnostics."""
        import message_filters  # checked at configure

        subscribers = [
            message_filters.Subscriber(
                self, msg_type, self.p[f"{stream}_topic"], qos_profile=self._qos(stream)
            )
            for stream, msg_type in types.items()
        ]
        if self.p["sync.mode"] == "exact":
            synchronizer = message_filters.TimeSynchronizer(subscribers, self.p["sync.queue_size"])
        else:
            synchronizer = message_filters.ApproximateTimeSynchronizer(
                subscribers, self.p["sync.queue_size"], self.p["sync.slop"]
            )
        synchronizer.registerCallback(self._on_synced_pair)
        self._synchronizer = synchronizer  # message_filters keeps no reference of its own
        self._inputs += [subscriber.sub for subscriber in subscribers]

    def _on_synced_pair(self, rgb: Any, thermal: Any) -> None:
        self._on_image("rgb", rgb)
        self._on_image("thermal", thermal)

    def _create_publishers(self) -> None:
        self.pub_fused = self.create_publisher(Image, "~/fused/image", 2)
        self.pub_fused_info = self.create_publisher(CameraInfo, "~/fused/camera_info", 2)
        self.pub_detections = self.create_publisher(Detection2DArray, "~/detections", 10)
        self.pub_annotated = self.create_publisher(Image, "~/detections/image", 2)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pub_label_info = self.create_publisher(LabelInfo, "~/label_info", latched)
        self._outputs = [
            self.pub_fused,
            self.pub_fused_info,
            self.pub_detections,
            self.pub_annotated,
            self.pub_label_info,
        ]

    def _destroy_publishers(self) -> None:
        for publisher in self._outputs:
            self.destroy_publisher(publisher)
        self._outputs = []

    def _on_set_parameters(self, changes: list) -> SetParametersResult:
        """Thresholds may be tuned at run time; everything else is fixed at start-up."""
        tunable = ("score_threshold", "nms_threshold", "max_detections")
        for change in changes:
            spec = node_params.SPECS.get(change.name)
            if spec is None:
                continue
            if change.name not in tunable:
                return SetParametersResult(
                    successful=False, reason=f"{change.name} can only be set at start-up"
                )
            try:
                node_params.check(spec, change.value)
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        for change in changes:
            if change.name in tunable:
                self.p[change.name] = change.value  # the next configure uses it too
                if self.engine is not None:
                    setattr(self.engine, change.name, change.value)
        return SetParametersResult(successful=True)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def _on_image(self, stream: str, msg: Any) -> None:
        """Callback: store only. Decoding and inference happen on the worker thread."""
        self.live.push(stream, msg, self.get_clock().now().nanoseconds)

    def _on_lost(self, stream: str, count: int) -> None:
        self.live.lost(stream, count, self.resolve_topic_name(self.p[f"{stream}_topic"]))

    def _work(self) -> None:
        while self._running and rclpy.ok(context=self.context):
            self.live.wait_for_data(0.1)
            pair = self.live.next_pair(self.get_clock().now().nanoseconds)
            if pair is None:
                continue
            try:
                self._process(pair)
            except Exception as exc:  # keep the worker alive; a shutdown ends the loop
                if not self._running or not rclpy.ok(context=self.context):
                    break
                self.errors.report("internal", f"pair at {pair.stamp_ns} ns failed: {exc!r}")

    def _process(self, pair: Pair) -> None:
        t0 = time.perf_counter()
        if self.live.take_clock_jump():
            self.pipeline.reset_tracks()
        try:
            frame = self.pipeline.run_messages(pair.rgb, pair.thermal)
        except FrameError as exc:
            self.errors.report(exc.kind, f"pair at {pair.stamp_ns} ns skipped: {exc}")
            return
        for kind, text in frame.warnings.items():
            self.errors.report(kind, text, warning=True)
        rgb, result = frame.rgb, frame.result
        header = self._output_header(pair)
        if self.p["publish.detections"]:
            self.pub_detections.publish(detections_to_msg(header, result.detections))
        if self.p["publish.fused"] and self.pub_fused.get_subscription_count() > 0:
            if self.p["fused_encoding"] == "mono8":
                self.pub_fused.publish(image_to_msg(result.fused_luma, "mono8", header))
            else:
                self.pub_fused.publish(image_to_msg(result.fused_bgr(rgb), "bgr8", header))
            self._publish_camera_info(header, rgb.shape[1], rgb.shape[0])
        if self.p["publish.annotated"] and self.pub_annotated.get_subscription_count() > 0:
            fused_rgb = result.fused_rgb(rgb)
            annotated = draw_detections(fused_rgb, result.detections, self.engine.class_names)
            self.pub_annotated.publish(image_to_msg(annotated[:, :, ::-1], "bgr8", header))
        timings = dict(frame.timings_ms)
        timings["total"] = (time.perf_counter() - t0) * 1e3
        timings["publish"] = timings["total"] - sum(frame.timings_ms.values())
        age_ms = (self.get_clock().now().nanoseconds - pair.rgb_stamp_ns) / 1e6
        self.stats.record(timings, age_ms)
        self.live.processed(pair)

    def _output_header(self, pair: Pair) -> Header:
        """Every output is in RGB pixels, so it carries the RGB camera's frame; in thermal_only
        fallback (thermal registered into RGB pixels) with the thermal stamp."""
        if pair.rgb is not None:
            return pair.rgb.header
        if self.live.rgb_frame_id is None:  # no RGB frame ever seen: thermal's grid is the only one
            return pair.thermal.header
        return Header(stamp=pair.thermal.header.stamp, frame_id=self.live.rgb_frame_id)

    def _publish_camera_info(self, header: Header, width: int, height: int) -> None:
        """The RGB camera's CameraInfo restamped for the fused image (same pixels, same model)."""
        info = self._camera_info
        if info is None:
            return
        if (info.width, info.height) != (width, height):
            self.errors.report(
                "camera_info_size",
                f"camera_info is {info.width}x{info.height} but the RGB image is "
                f"{width}x{height}: ~/fused/camera_info not published",
            )
            return
        out = copy.copy(info)
        out.header = header
        self.pub_fused_info.publish(out)

    def _publish_diagnostics(self) -> None:
        name, fqn = self.get_name(), self.get_fully_qualified_name()
        values: dict[str, object] = {"state": self.state, "processed_pairs": self.stats.processed}
        if self.state != "active":  # nothing runs: say so, and why if configure failed
            message = f"lifecycle state: {self.state}"
            if self.state == "unconfigured" and self._configure_error:
                values["configure_error"] = self._configure_error
                message += f" (configure failed: {self._configure_error})"
            level = ERROR if self._configure_error else OK
            self._publish_statuses(
                [diagnostic_status(f"{name}: pipeline", fqn, level, message, values)]
            )
            return
        topics = {s: self.resolve_topic_name(self.p[f"{s}_topic"]) for s in STREAMS}
        health = self.live.health(self.get_clock().now().nanoseconds, topics)
        info = self._camera_info
        values.update(
            device=self.engine.device,
            backend=self.engine.backend.name,
            camera_info=f"{info.width}x{info.height}" if info is not None else "none received",
            **health.values,
            **self.stats.values(),
        )
        if self.engine.device.type == "cuda":
            import torch

            memory = torch.cuda.memory_allocated(self.engine.device) / 2**20
            values["gpu_memory_mb"] = f"{memory:.1f}"
        values.update({f"errors.{kind}": count for kind, count in self.errors.counts.items()})
        statuses = [
            diagnostic_status(
                f"{name}: pipeline", fqn, OK if health.ok else WARN, health.message, values
            )
        ]
        for stream, camera in health.cameras.items():
            level = OK if camera.ok else WARN
            statuses.append(
                diagnostic_status(
                    f"{name}: {stream} camera", topics[stream], level, camera.text, camera.values
                )
            )
        self._publish_statuses(statuses)

    def _publish_statuses(self, statuses: list[DiagnosticStatus]) -> None:
        array = DiagnosticArray(status=statuses)
        array.header.stamp = self.get_clock().now().to_msg()
        self.pub_diagnostics.publish(array)

    def destroy_node(self) -> None:
        self._running = False
        worker = getattr(self, "_worker", None)  # absent when start-up failed
        if worker is not None and worker.is_alive():
            worker.join(timeout=5.0)
        super().destroy_node()


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def main(args: list[str] | None = None) -> int:
    return spin_node(FusionNode, "fusion_node", args)


if __name__ == "__main__":
    sys.exit(main())
