"""fusion_node: synchronized RGB + thermal in, fused image + Detection2DArray out.

Subscription callbacks only hand messages to the pairing engine; one worker thread takes the newest
matched pair, runs the network and publishes. When the cameras outrun the model, pairs are skipped and
counted, never queued, so the output age stays bounded.
"""

from __future__ import annotations

import copy
import math
import sys
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import numpy as np
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
from fusion_perception.image_codec import (
    ImageEncodingError,
)
from fusion_perception.imaging import (
    Registration,
    ThermalNormalizer,
    make_normalizer,
)
from fusion_perception.pairing import REJECT_BACKWARDS, Pair, PairingEngine, StampGapCounter
from fusion_perception.pipeline import FramePipeline, decode_rgb_message, decode_thermal_message
from fusion_perception.ros import params as node_params
from fusion_perception.ros.image_conversions import image_to_msg
from fusion_perception.ros.messages import detections_to_msg, diagnostic_status, label_info_msg
from fusion_perception.ros.qos import watch_subscription
from fusion_perception.ros.spin import spin_node
from fusion_perception.tracking import IoUTracker

STREAMS = ("rgb", "thermal")
CLOCK_JUMP_NS = 1_000_000_000  # a stamp this far behind its stream's last one: the clock jumped
FUTURE_TOLERANCE_NS = 500_000_000  # a stamp this far ahead of the node's clock is flagged
FUTURE_FLAG_S = 3.0  # how long a camera's diagnostics stay WARN after a future stamp
UNPAIRED_WARN_S = 3.0  # both cameras live but no pair for this long: diagnose the stamp offset
RECENT_STAMPS = 50  # per stream, for measuring the offset between the streams


def stamp_ns(msg: Any) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def default_checkpoint() -> Path:
    """The demo model installed with the package (share/fusion_perception/models/demo.pt)."""
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("fusion_perception")) / "models" / "demo.pt"


class FusionNode(LifecycleNode):
    """A managed (lifecycle) node. configure loads the checkpoint and backend and creates the
    publishers; activate subscribes and starts the worker; deactivate stops all output; cleanup
    releases the model and its (GPU) memory. With ``autostart`` (the default) it configures and
    activates itself, so ``ros2 run`` works without a lifecycle manager. Diagnostics are
    published in every state and say which one."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("fusion_node", **kwargs)
        self.p = node_params.declare_and_read(self)
        self.engine: FusionEngine | None = None
        self.tracker: IoUTracker | None = None
        self.state = "unconfigured"
        self._configure_error = ""
        self._inputs: list[Any] = []  # subscriptions, alive while active
        self._outputs: list[Any] = []  # publishers, alive while configured
        self._running = False
        self._worker: threading.Thread | None = None
        self._tracker_reset = threading.Event()  # set by a clock jump, honoured by the worker
        self._lock = threading.Lock()
        self.errors: Counter[str] = Counter()
        self._last_logged: dict[str, float] = {}
        self._logged_count: dict[str, int] = {}
        self.latest: dict[str, Any] = dict.fromkeys(STREAMS)
        self.arrivals: dict[str, deque[float]] = {s: deque(maxlen=100) for s in STREAMS}
        self.receive_delay_ms: dict[str, deque[float]] = {s: deque(maxlen=100) for s in STREAMS}
        self.stage_ms: dict[str, deque[float]] = {}
        self.ages_ms: deque[float] = deque(maxlen=100)
        self.processed = 0
        self.last_processed_stamp = 0
        self._last_stamp: dict[str, int] = {}  # newest accepted stamp per stream
        self._recent_stamps: dict[str, deque[int]] = {
            s: deque(maxlen=RECENT_STAMPS) for s in STREAMS
        }
        self._future: dict[str, tuple[float, int]] = {}  # stream -> (monotonic, ns ahead)
        self.lost: Counter[str] = Counter()  # messages the middleware reported lost, per camera
        self.gaps = {s: StampGapCounter() for s in STREAMS}  # frames missing from the stamps
        self._camera_info: CameraInfo | None = None  # the RGB camera's newest
        self._rgb_frame_id: str | None = None  # the frame the outputs' pixels are in
        self._pairs_seen = 0
        self._pairing_since = time.monotonic()  # since when no pair formed (both cameras live)
        self._unpaired_logged = False
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
            f"{'; tracking' if self.tracker else ''})"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._create_subscriptions()
        header = Header(stamp=self.get_clock().now().to_msg())
        self.pub_label_info.publish(
            label_info_msg(header, self.engine.class_names, self.engine.score_threshold)
        )
        self._pairing_since = time.monotonic()
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
        """Engine, tracker, normalizer, registration and pairing from the parameters; a
        ValueError names the parameter at fault."""
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
        except ValueError as exc:
            raise ValueError(f"parameter {exc}") from None
        try:
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
        except ValueError as exc:  # the engine names the parameter (e.g. "classes: ...")
            raise ValueError(f"parameter {exc}") from None
        self.tracker = (
            IoUTracker(node_params.tracker_config(self.p)) if self.p["tracking.enabled"] else None
        )
        try:
            registration = (
                Registration.from_yaml(self.p["calibration_file"])
                if self.p["calibration_file"]
                else None
            )
        except (OSError, ValueError) as exc:
            raise ValueError(f"parameter calibration_file: {exc}") from None
        self.pipeline = FramePipeline(self.engine, self._make_normalizer(), registration)
        self.pairing = PairingEngine(
            mode="exact" if self.p["sync.mode"] == "exact" else "approximate",
            slop_ns=round(self.p["sync.slop"] * 1e9),
            offsets_ns={
                "rgb": round(self.p["sync.rgb_offset"] * 1e9),
                "thermal": round(self.p["sync.thermal_offset"] * 1e9),
            },
            queue_size=self.p["sync.queue_size"],
            max_age_ns=round(self.p["sync.max_age"] * 1e9),
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
        with self._lock:
            self.latest = dict.fromkeys(STREAMS)
        if self.engine is not None:
            self.pairing.reset()

    def _release_model(self) -> None:
        """Drop the engine; on CUDA hand its memory back to the driver."""
        engine, self.engine, self.tracker = self.engine, None, None
        if engine is not None and engine.device.type == "cuda":
            import torch

            del engine
            torch.cuda.empty_cache()

    def _make_normalizer(self) -> ThermalNormalizer:
        scheme = self.p["thermal.normalization"]
        if scheme == "checkpoint":
            spec = self.engine.checkpoint.thermal_normalization
            return make_normalizer(spec["scheme"], **spec["params"])
        chosen = {
            "fixed_range": {"lo": self.p["thermal.range_lo"], "hi": self.p["thermal.range_hi"]},
            "percentile": {
                "p_lo": self.p["thermal.p_lo"],
                "p_hi": self.p["thermal.p_hi"],
                "ema": self.p["thermal.ema"],
            },
            "minmax": {},
        }[scheme]
        return make_normalizer(scheme, **chosen)

    def _qos(self, stream: str) -> QoSProfile:
        reliability = self.p[f"{stream}_qos.reliability"]
        return QoSProfile(
            depth=self.p[f"{stream}_qos.depth"],
            reliability=ReliabilityPolicy.RELIABLE
            if reliability == "reliable"
            else ReliabilityPolicy.BEST_EFFORT,
        )

    def _create_subscriptions(self) -> None:
        rgb_type = CompressedImage if self.p["rgb_compressed"] else Image
        thermal_type = CompressedImage if self.p["thermal_compressed"] else Image
        if self.p["sync.backend"] == "message_filters":
            self._create_synchronizer(rgb_type, thermal_type)
        else:
            self._create_camera_subscriptions(rgb_type, thermal_type)
        self._inputs.append(
            self.create_subscription(
                CameraInfo,
                node_params.camera_info_topic(self.p),
                self._on_camera_info,
                self._qos("rgb"),
            )
        )

    def _create_camera_subscriptions(self, rgb_type: type, thermal_type: type) -> None:
        for stream, msg_type in (("rgb", rgb_type), ("thermal", thermal_type)):
            qos = self._qos(stream)
            topic = self.p[f"{stream}_topic"]
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

    def _create_synchronizer(self, rgb_type: type, thermal_type: type) -> None:
        """message_filters pairs the streams; each matched pair then goes through the builtin
        engine too (same slop, so it pairs them alike), which keeps the counters and diagnostics."""
        import message_filters  # checked at configure

        subscribers = [
            message_filters.Subscriber(
                self, msg_type, self.p[f"{stream}_topic"], qos_profile=self._qos(stream)
            )
            for stream, msg_type in (("rgb", rgb_type), ("thermal", thermal_type))
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
        for change in changes:
            spec = node_params.SPECS.get(change.name)
            if spec is None:
                continue
            if change.name not in ("score_threshold", "nms_threshold", "max_detections"):
                return SetParametersResult(
                    successful=False, reason=f"{change.name} can only be set at start-up"
                )
            try:
                node_params.check(spec, change.value)
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        for change in changes:
            if change.name in ("score_threshold", "nms_threshold", "max_detections"):
                self.p[change.name] = change.value  # the next configure uses it too
                if self.engine is not None:
                    setattr(self.engine, change.name, change.value)
        return SetParametersResult(successful=True)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def _on_image(self, stream: str, msg: Any) -> None:
        """Callback: store only. Decoding and inference happen on the worker thread."""
        now = time.monotonic()
        if stream == "rgb":
            self._rgb_frame_id = msg.header.frame_id
        stamp = stamp_ns(msg)
        self.arrivals[stream].append(now)
        # Transport delay as seen here (wall clock minus stamp): shows DDS cost and clock skew.
        self.receive_delay_ms[stream].append((time.time_ns() - stamp) / 1e6)
        with self._lock:
            self.latest[stream] = (now, msg)
        ahead = stamp - self.get_clock().now().nanoseconds
        if ahead > FUTURE_TOLERANCE_NS:
            self._future[stream] = (now, ahead)
            self._report(
                f"{stream}_stamp_future",
                f"{stream} stamp is {ahead / 1e9:.2f} s ahead of this node's clock (frame_id "
                f"'{msg.header.frame_id}'): the camera's clock is not synchronised with this host "
                "(or use_sim_time differs between the nodes)",
                warning=True,
            )
        result = self.pairing.push(stream, stamp, msg)
        previous = self._last_stamp.get(stream)
        if (
            result.reason == REJECT_BACKWARDS
            and previous is not None
            and previous - stamp > CLOCK_JUMP_NS
        ):
            # A bag that loops or a simulator that restarts: without a restart of pairing every
            # later message would be "backwards" for good.
            self._report(
                f"{stream}_clock_jump",
                f"{stream} clock jumped back {(previous - stamp) / 1e9:.2f} s "
                f"({REJECT_BACKWARDS}, frame_id '{msg.header.frame_id}'): pairing restarted",
            )
            self.pairing.reset()
            self._tracker_reset.set()  # tracks of the old timeline would match by accident
            self._last_stamp.clear()
            for gaps in self.gaps.values():
                gaps.last = None  # the new timeline starts afresh
            for recent in self._recent_stamps.values():
                recent.clear()
            self.last_processed_stamp = 0
            result = self.pairing.push(stream, stamp, msg)
        if result.accepted:
            self._last_stamp[stream] = stamp
            self._recent_stamps[stream].append(stamp)
            missed = self.gaps[stream].add(stamp)
            if missed:
                self._report(
                    f"{stream}_frames_missing",
                    f"{stream}: {missed} frame(s) missing before stamp {stamp} ns (lost in "
                    f"transport or by the camera; {self.gaps[stream].missing} so far)",
                    warning=True,
                )
        else:
            self._report(
                f"{stream}_{result.reason}",
                f"{stream} message rejected: {result.reason} "
                f"(stamp {stamp} ns, frame_id '{msg.header.frame_id}')",
            )

    def _on_lost(self, stream: str, count: int) -> None:
        self.lost[stream] += count
        self._report(
            f"{stream}_messages_lost",
            f"{stream}: the middleware lost {count} message(s) on "
            f"{self.resolve_topic_name(self.p[f'{stream}_topic'])} ({self.lost[stream]} so far; "
            "large images over best effort: raise the socket buffers or use reliable QoS)",
            warning=True,
        )

    def _report(self, kind: str, text: str, warning: bool = False) -> None:
        """Count an input error and log it, at most every 2 s per kind, so a bad stream cannot
        flood the log while a different problem still gets its own line at once."""
        self.errors[kind] += 1
        now = time.monotonic()
        if now - self._last_logged.get(kind, -math.inf) >= 2.0:
            self._last_logged[kind] = now
            suppressed = self.errors[kind] - self._logged_count.get(kind, 0) - 1
            suffix = f" ({suppressed} similar since last report)" if suppressed > 0 else ""
            self._logged_count[kind] = self.errors[kind]
            # rclpy ties one severity to each calling line, so each level has its own call.
            if warning:
                self.get_logger().warning(text + suffix)
            else:
                self.get_logger().error(text + suffix)

    def _silent_streams(self) -> list[str]:
        now = time.monotonic()
        timeout = self.p["camera_timeout"]
        with self._lock:
            return [
                s for s in STREAMS if self.latest[s] is None or now - self.latest[s][0] > timeout
            ]

    def _work(self) -> None:
        while self._running and rclpy.ok(context=self.context):
            self.pairing.wait_for_data(0.1)
            pair = self.pairing.take_newest_pair(self.get_clock().now().nanoseconds)
            if pair is None:
                pair = self._fallback_pair()
            if pair is None:
                continue
            try:
                self._process(pair)
            except Exception as exc:  # keep the worker alive; a shutdown ends the loop
                if not self._running or not rclpy.ok(context=self.context):
                    break
                self._report("internal", f"pair at {pair.stamp_ns} ns failed: {exc!r}")

    def _fallback_pair(self) -> Pair | None:
        """With one camera silent and `fallback` set, run on the newest frame of the other."""
        mode = self.p["fallback"]
        if mode == "none":
            return None
        live = "rgb" if mode == "rgb_only" else "thermal"
        silent = self._silent_streams()
        if live in silent or ("thermal" if live == "rgb" else "rgb") not in silent:
            return None
        with self._lock:
            entry = self.latest[live]
        if entry is None or stamp_ns(entry[1]) <= self.last_processed_stamp:
            return None
        msg = entry[1]
        stamp = stamp_ns(msg)
        return Pair(
            msg if live == "rgb" else None, msg if live == "thermal" else None, stamp, stamp, 0
        )

    @staticmethod
    def _decoded(stream: str, decode: Any, msg: Any) -> Any:
        try:
            return decode(msg)
        except ImageEncodingError as exc:
            raise ImageEncodingError(f"{stream}: {exc}") from None

    def _process(self, pair: Pair) -> None:
        t0 = time.perf_counter()
        rgb_msg = pair.rgb if pair.rgb is not None else pair.thermal
        try:
            raw = None
            if pair.thermal is not None:
                raw, encoding = self._decoded("thermal", decode_thermal_message, pair.thermal)
                warning = self.pipeline.follow_encoding(encoding)
                if warning is not None:
                    self._report(f"thermal_encoding_changed.{encoding}", warning, warning=True)
            rgb = None if pair.rgb is None else self._decoded("rgb", decode_rgb_message, pair.rgb)
            t1 = time.perf_counter()
            frame = self.pipeline.run(rgb, raw)
            rgb, result = frame.rgb, frame.result
        except (ImageEncodingError, ValueError, TypeError) as exc:
            # One counter per problem (the camera and the message's leading field), e.g.
            # "encoding.thermal.data" or "input.size mismatch".
            category = "encoding" if isinstance(exc, ImageEncodingError) else "input"
            fields = [f.strip() for f in str(exc).split(":", 2)]
            field = ".".join(fields[:2]) if fields[0] in STREAMS else fields[0]
            kind = f"{category}.{field[:48]}"
            self._report(kind, f"pair at {pair.stamp_ns} ns skipped: {exc}")
            return
        header = self._output_header(rgb_msg, pair.rgb is None)
        if self.tracker is not None:
            if self._tracker_reset.is_set():
                self._tracker_reset.clear()
                self.tracker.reset()
            result.detections = self.tracker.update(result.detections)
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
        t2 = time.perf_counter()
        timings = dict(frame.timings_ms)
        timings["decode"] = (t1 - t0) * 1e3
        timings["total"] = (t2 - t0) * 1e3
        timings["publish"] = timings["total"] - timings["decode"] - sum(frame.timings_ms.values())
        for stage, ms in timings.items():
            self.stage_ms.setdefault(stage, deque(maxlen=100)).append(ms)
        self.ages_ms.append((self.get_clock().now().nanoseconds - pair.rgb_stamp_ns) / 1e6)
        self.processed += 1
        self.last_processed_stamp = max(pair.rgb_stamp_ns, pair.thermal_stamp_ns)

    def _output_header(self, msg: Any, thermal_only: bool) -> Header:
        """Every output is in RGB pixels, so it carries the RGB camera's frame; in thermal_only
        fallback (thermal registered into RGB pixels) with the thermal stamp."""
        if not thermal_only or self._rgb_frame_id is None:
            return msg.header  # no RGB frame ever seen: the thermal camera's grid is the only one
        return Header(stamp=msg.header.stamp, frame_id=self._rgb_frame_id)

    def _publish_camera_info(self, header: Header, width: int, height: int) -> None:
        """The RGB camera's CameraInfo restamped for the fused image (same pixels, same model)."""
        info = self._camera_info
        if info is None:
            return
        if (info.width, info.height) != (width, height):
            self._report(
                "camera_info_size",
                f"camera_info is {info.width}x{info.height} but the RGB image is "
                f"{width}x{height}: ~/fused/camera_info not published",
            )
            return
        out = copy.copy(info)
        out.header = header
        self.pub_fused_info.publish(out)

    def _stream_offset(self, after_ns: int = 0) -> tuple[float, float, int] | None:
        """(median, max deviation, samples) in ns of thermal minus the nearest RGB stamp, both
        with their sync offsets applied: what is left for sync.slop to cover. Only thermal
        stamps later than ``after_ns`` count (e.g. those since the last processed pair)."""
        rgb = np.array(self._recent_stamps["rgb"], np.int64) + self.pairing.offsets_ns["rgb"]
        raw = np.array(self._recent_stamps["thermal"], np.int64)
        thermal = raw[raw > after_ns] + self.pairing.offsets_ns["thermal"]
        if rgb.size == 0 or thermal.size == 0:
            return None
        rgb.sort()
        k = np.searchsorted(rgb, thermal).clip(1, max(rgb.size - 1, 1))
        before, after = rgb[k - 1], rgb[np.minimum(k, rgb.size - 1)]
        nearest = np.where(np.abs(thermal - before) <= np.abs(thermal - after), before, after)
        d = (thermal - nearest).astype(np.float64)
        median = float(np.median(d))
        return median, float(np.abs(d - median).max()), int(d.size)

    def _unpaired_advice(self, residual_ns: float, jitter_ns: float, samples: int) -> str | None:
        """What to set when the measured offset keeps the streams from pairing (else None)."""
        exact = self.p["sync.mode"] == "exact"
        slop_ns = 0 if exact else self.pairing.slop_ns
        if abs(residual_ns) - jitter_ns <= slop_ns and not (exact and residual_ns != 0):
            return None  # the stamps could pair: the cause is elsewhere
        side = "after" if residual_ns > 0 else "before"
        measured = (
            f"thermal stamps are {abs(residual_ns) / 1e6:.1f} ms {side} rgb (after the sync "
            f"offsets; median of {samples}, jitter {jitter_ns / 1e6:.1f} ms)"
        )
        thermal_offset = self.p["sync.thermal_offset"] - residual_ns / 1e9
        rgb_offset = self.p["sync.rgb_offset"] + residual_ns / 1e9
        if abs(thermal_offset) > 1.0 and abs(rgb_offset) > 1.0:
            return (
                f"{measured}: the cameras stamp with different clocks; stamp both from one "
                "clock (sync.*_offset is limited to +-1 s)"
            )
        offset = (
            f"sync.thermal_offset:={thermal_offset:.3f}"
            if abs(thermal_offset) <= 1.0
            else f"sync.rgb_offset:={rgb_offset:.3f}"
        )
        if exact:
            return f"{measured} and sync.mode is exact; set {offset} or sync.mode:=approximate"
        slop = (abs(residual_ns) + jitter_ns) / 1e9 + 0.001
        wider = f" (or sync.slop:={slop:.3f})" if slop <= 1.0 else ""
        return (
            f"{measured}, beyond sync.slop {self.pairing.slop_ns / 1e9:.3f} s; set {offset}{wider}"
        )

    def _pairing_health(self, pairs: int, silent: list[str]) -> str | None:
        """Warning text when both cameras are live but nothing paired for UNPAIRED_WARN_S."""
        now = time.monotonic()
        if pairs != self._pairs_seen or silent:
            self._pairs_seen, self._pairing_since = pairs, now
            self._unpaired_logged = False
            return None
        unpaired_s = now - self._pairing_since
        if unpaired_s < UNPAIRED_WARN_S:
            return None
        # Thermal frames since the last processed pair: the ones that found no partner.
        offset = self._stream_offset(after_ns=self.last_processed_stamp)
        advice = self._unpaired_advice(*offset) if offset is not None and offset[2] >= 3 else None
        if advice is None:
            return None
        text = f"rgb and thermal have not paired for {unpaired_s:.1f} s: {advice}"
        if not self._unpaired_logged:  # one line per episode; diagnostics repeat it
            self._unpaired_logged = True
            self.get_logger().warning(text)
        return text

    def _publish_diagnostics(self) -> None:
        if self.state != "active":  # nothing runs: say so, and why if configure failed
            values = {"state": self.state, "processed_pairs": self.processed}
            message = f"lifecycle state: {self.state}"
            if self.state == "unconfigured" and self._configure_error:
                values["configure_error"] = self._configure_error
                message += f" (configure failed: {self._configure_error})"
            status = diagnostic_status(
                f"{self.get_name()}: pipeline",
                self.get_fully_qualified_name(),
                DiagnosticStatus.OK[0] if not self._configure_error else DiagnosticStatus.ERROR[0],
                message,
                values,
            )
            array = DiagnosticArray(status=[status])
            array.header.stamp = self.get_clock().now().to_msg()
            self.pub_diagnostics.publish(array)
            return
        now_ns = self.get_clock().now().nanoseconds
        stats = self.pairing.stats(now_ns)
        silent = self._silent_streams()
        unpaired = self._pairing_health(stats.pairs + stats.stale_pairs, silent)
        values: dict[str, object] = {
            "state": self.state,
            "device": self.engine.device,
            "backend": self.engine.backend.name,
            "processed_pairs": self.processed,
            "pair_rate_hz": f"{stats.pair_rate_hz:.2f}",
            "stale_pairs": stats.stale_pairs,
            "camera_info": (
                f"{self._camera_info.width}x{self._camera_info.height}"
                if self._camera_info is not None
                else "none received"
            ),
        }
        for stream in STREAMS:
            times = self.arrivals[stream]
            rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
            s = stats.streams[stream]
            values[f"{stream}_rate_hz"] = f"{rate:.2f}"
            values[f"{stream}_dropped"] = s.dropped
            values[f"{stream}_unmatched"] = s.unmatched
            values[f"{stream}_messages_lost"] = self.lost[stream]
            values[f"{stream}_frames_missing"] = self.gaps[stream].missing
            if s.last_age_ns is not None:
                values[f"{stream}_last_message_age_ms"] = f"{s.last_age_ns / 1e6:.1f}"
            if self.receive_delay_ms[stream]:
                delay = float(np.median(self.receive_delay_ms[stream]))
                values[f"{stream}_receive_delay_ms"] = f"{delay:.2f}"
        offset = self._stream_offset()
        if offset is not None:
            values["thermal_minus_rgb_ms"] = f"{offset[0] / 1e6:.2f}"
        if unpaired is not None:
            values["unpaired_s"] = f"{time.monotonic() - self._pairing_since:.1f}"
        if stats.dt_abs_mean_ns is not None:
            values["pair_dt_mean_ms"] = f"{stats.dt_abs_mean_ns / 1e6:.2f}"
            values["pair_dt_p95_ms"] = f"{stats.dt_abs_p95_ns / 1e6:.2f}"
        for stage, samples in self.stage_ms.items():
            values[f"{stage}_ms"] = f"{float(np.mean(samples)):.2f}"
        if self.ages_ms:
            values["age_ms_mean"] = f"{float(np.mean(self.ages_ms)):.2f}"
            values["age_ms_max"] = f"{max(self.ages_ms):.2f}"
        if self.engine.device.type == "cuda":
            import torch

            values["gpu_memory_mb"] = (
                f"{torch.cuda.memory_allocated(self.engine.device) / 2**20:.1f}"
            )
        for kind, count in self.errors.items():
            values[f"errors.{kind}"] = count
        statuses = []
        pipeline_level = DiagnosticStatus.OK[0]
        message = "running"
        if silent:
            pipeline_level = DiagnosticStatus.WARN[0]
            message = f"camera silent for > {self.p['camera_timeout']} s: {', '.join(silent)}"
            if self.p["fallback"] != "none":
                message += f" (fallback {self.p['fallback']})"
        elif unpaired is not None:
            pipeline_level = DiagnosticStatus.WARN[0]
            message = unpaired
        statuses.append(
            diagnostic_status(
                f"{self.get_name()}: pipeline",
                self.get_fully_qualified_name(),
                pipeline_level,
                message,
                values,
            )
        )
        for stream in STREAMS:
            topic = self.resolve_topic_name(self.p[f"{stream}_topic"])
            camera = {"topic": topic, "rate_hz": values[f"{stream}_rate_hz"]}
            level, text = DiagnosticStatus.OK[0], "receiving"
            future = self._future.get(stream)
            if stream in silent:
                level, text = DiagnosticStatus.WARN[0], f"{stream} camera silent ({topic})"
            elif future is not None and time.monotonic() - future[0] < FUTURE_FLAG_S:
                level = DiagnosticStatus.WARN[0]
                text = (
                    f"{stream} stamps {future[1] / 1e9:.2f} s in the future ({topic}): camera "
                    "clock not synchronised with this host"
                )
            if future is not None:
                camera["stamp_ahead_s"] = f"{future[1] / 1e9:.3f}"
            statuses.append(
                diagnostic_status(f"{self.get_name()}: {stream} camera", topic, level, text, camera)
            )
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
