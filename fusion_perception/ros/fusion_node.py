"""fusion_node: synchronized RGB + thermal in, fused image + Detection2DArray out.

Subscription callbacks only hand messages to the pairing engine; one worker thread takes the newest
matched pair, runs the network and publishes the detections; an image thread builds and publishes
the fused and annotated images behind it. When the cameras outrun the model, pairs are skipped and
counted, never queued, so the output age stays bounded.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo

from fusion_perception.live import ErrorLog, FrameStats
from fusion_perception.pairing import STREAMS, Pair
from fusion_perception.pipeline import FrameError
from fusion_perception.ros import diagnostics
from fusion_perception.ros import params as node_params
from fusion_perception.ros.configure import build_runtime
from fusion_perception.ros.inputs import CameraInputs
from fusion_perception.ros.outputs import FusionOutputs, output_header
from fusion_perception.ros.spin import spin_node

TUNABLE = ("score_threshold", "nms_threshold", "max_detections")  # settable at run time


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
        self.runtime = None  # engine, pipeline and live input, while configured
        self.outputs: FusionOutputs | None = None
        self.state = "unconfigured"
        self._configure_error = ""
        self.inputs: CameraInputs | None = None  # subscriptions, alive while active
        self._running = False
        self._worker: threading.Thread | None = None
        logger = self.get_logger()
        self.errors = ErrorLog(logger.warning, logger.error)
        self.stats = FrameStats()
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
            self.runtime = build_runtime(self.p, self.errors)
        except ValueError as exc:
            self._configure_error = str(exc)
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.outputs = FusionOutputs(self, self.p, self.errors, self.stats)
        self._configure_error = ""
        self.state = "inactive"
        engine = self.runtime.engine
        self.get_logger().info(
            f"configured: {self.runtime.checkpoint} on {engine.device} ({engine.backend.name} "
            f"backend, {'rotated' if engine.rotated else 'horizontal'} boxes, "
            f"classes {', '.join(engine.class_names)}; scores "
            f"{'calibrated' if engine.score_calibration is not None else 'raw'}"
            f"{'; publishing ' + self.p['classes'] if self.p['classes'] else ''}"
            f"{'; tracking' if self.runtime.pipeline.tracker else ''})"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.inputs = CameraInputs(
            self, self.p, self._on_image, self._on_lost, self._on_camera_info
        )
        engine = self.runtime.engine
        self.outputs.publish_labels(engine.class_names, engine.score_threshold)
        self.runtime.live.reset()
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

    def _stop(self) -> None:
        """Stop the worker and drop the subscriptions (no input, so no output)."""
        self._running = False
        if self._worker is not None and self._worker.is_alive():
            self._worker.join(timeout=5.0)
        self._worker = None
        if self.inputs is not None:
            self.inputs.destroy()
        self.inputs = None
        if self.outputs is not None:
            self.outputs.discard_pending()
        if self.runtime is not None:
            self.runtime.live.reset()

    def _release_model(self) -> None:
        """Drop the engine; on CUDA hand its memory back to the driver."""
        runtime, self.runtime = self.runtime, None
        if runtime is not None and runtime.engine.device.type == "cuda":
            import torch

            del runtime
            torch.cuda.empty_cache()

    def _destroy_publishers(self) -> None:
        if self.outputs is not None:
            self.outputs.destroy()
        self.outputs = None

    def _on_set_parameters(self, changes: list) -> SetParametersResult:
        """Thresholds may be tuned at run time; everything else is fixed at start-up."""
        for change in changes:
            spec = node_params.SPECS.get(change.name)
            if spec is None:
                continue
            if change.name not in TUNABLE:
                return SetParametersResult(
                    successful=False, reason=f"{change.name} can only be set at start-up"
                )
            try:
                node_params.check(spec, change.value)
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        for change in changes:
            if change.name in TUNABLE:
                self.p[change.name] = change.value  # the next configure uses it too
                if self.runtime is not None:
                    setattr(self.runtime.engine, change.name, change.value)
        return SetParametersResult(successful=True)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.outputs.camera_info = msg

    def _on_image(self, stream: str, msg: Any) -> None:
        """Callback: store only. Decoding and inference happen on the worker thread."""
        self.runtime.live.push(stream, msg, self.get_clock().now().nanoseconds)

    def _on_lost(self, stream: str, count: int) -> None:
        topic = self.resolve_topic_name(self.p[f"{stream}_topic"])
        self.runtime.live.lost(stream, count, topic)

    def _work(self) -> None:
        live = self.runtime.live
        while self._running and rclpy.ok(context=self.context):
            live.wait_for_data(0.1)
            pair = live.next_pair(self.get_clock().now().nanoseconds)
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
        runtime = self.runtime
        if runtime.live.take_clock_jump():
            runtime.pipeline.reset_tracks()
        try:
            frame = runtime.pipeline.run_messages(pair.rgb, pair.thermal)
        except FrameError as exc:
            self.errors.report(exc.kind, f"pair at {pair.stamp_ns} ns skipped: {exc}")
            return
        for kind, text in frame.warnings.items():
            self.errors.report(kind, text, warning=True)
        header = output_header(pair, runtime.live.rgb_frame_id)
        self.outputs.publish(header, frame, runtime.engine.class_names)
        timings = dict(frame.timings_ms)
        timings["total"] = (time.perf_counter() - t0) * 1e3
        timings["publish"] = timings["total"] - sum(frame.timings_ms.values())
        age_ms = (self.get_clock().now().nanoseconds - pair.rgb_stamp_ns) / 1e6
        self.stats.record(timings, age_ms)
        runtime.live.processed(pair)

    def _publish_diagnostics(self) -> None:
        name, fqn = self.get_name(), self.get_fully_qualified_name()
        if self.state != "active":
            statuses = diagnostics.idle_statuses(
                name, fqn, self.state, self.stats.processed, self._configure_error
            )
        else:
            topics = {s: self.resolve_topic_name(self.p[f"{s}_topic"]) for s in STREAMS}
            health = self.runtime.live.health(self.get_clock().now().nanoseconds, topics)
            statuses = diagnostics.active_statuses(
                name,
                fqn,
                health,
                topics,
                self.runtime.engine,
                self.outputs.camera_info,
                self.stats,
                self.errors,
                self.outputs.images_skipped,
            )
        stamp = self.get_clock().now().to_msg()
        self.pub_diagnostics.publish(diagnostics.diagnostic_array(statuses, stamp))

    def destroy_node(self) -> None:
        self._running = False
        worker = getattr(self, "_worker", None)  # absent when start-up failed
        if worker is not None and worker.is_alive():
            worker.join(timeout=5.0)
        if getattr(self, "outputs", None) is not None:
            self._destroy_publishers()  # stops the image thread too
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return spin_node(FusionNode, "fusion_node", args)


if __name__ == "__main__":
    sys.exit(main())
