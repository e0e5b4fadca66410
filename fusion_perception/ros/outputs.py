"""The node's publishers and what each processed pair sends on them: detections, the fused image
(with the RGB camera's CameraInfo restamped), the annotated image and the latched label map.

Detections leave on the worker thread as soon as the pair is processed; the images (colour merge,
drawing, a megabyte message each) are built and published by a thread of their own, so neither
the detections' latency nor the next pair waits for them. When that thread falls behind, the
newest frame replaces the one not yet sent (counted as ``images_skipped``)."""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from fusion_perception.annotate import draw_detections
from fusion_perception.colour import rgb_to_bgr
from fusion_perception.live import ErrorLog, FrameStats, LatestSlot
from fusion_perception.pairing import Pair
from fusion_perception.pipeline import FrameOutput
from fusion_perception.ros.image_conversions import image_to_msg
from fusion_perception.ros.messages import detections_to_msg, label_info_msg


class FusionOutputs:
    """Publishers alive while the node is configured. Images are only converted when someone
    subscribes to them."""

    def __init__(
        self, node: Node, params: dict[str, Any], errors: ErrorLog, stats: FrameStats
    ) -> None:
        self.node, self.p, self.errors, self.stats = node, params, errors, stats
        self.fused = node.create_publisher(Image, "~/fused/image", 2)
        self.fused_info = node.create_publisher(CameraInfo, "~/fused/camera_info", 2)
        self.detections = node.create_publisher(Detection2DArray, "~/detections", 10)
        self.annotated = node.create_publisher(Image, "~/detections/image", 2)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.label_info = node.create_publisher(LabelInfo, "~/label_info", latched)
        self.camera_info: CameraInfo | None = None  # the RGB camera's newest
        self._images = LatestSlot()
        self._building = threading.Lock()  # held while one frame's images are made and sent
        self._image_thread = threading.Thread(
            target=self._publish_images, name="fusion_images", daemon=True
        )
        self._image_thread.start()

    @property
    def images_skipped(self) -> int:
        return self._images.replaced

    def discard_pending(self) -> None:
        """Output stops (deactivate): images not yet built are not sent, and the ones being
        built are finished before this returns."""
        self._images.discard()
        with self._building:
            pass

    def destroy(self) -> None:
        self._images.close()
        self._image_thread.join(timeout=5.0)
        if self._image_thread.is_alive():
            self.errors.report(
                "image_publish", "image thread still busy after 5 s; publishers destroyed anyway"
            )
        for publisher in (
            self.fused,
            self.fused_info,
            self.detections,
            self.annotated,
            self.label_info,
        ):
            self.node.destroy_publisher(publisher)

    def publish_labels(self, class_names: list[str], threshold: float) -> None:
        header = Header(stamp=self.node.get_clock().now().to_msg())
        self.label_info.publish(label_info_msg(header, class_names, threshold))

    def publish(self, header: Header, frame: FrameOutput, class_names: list[str]) -> None:
        """Detections now; the images, when anyone watches them, on the image thread."""
        if self.p["publish.detections"]:
            self.detections.publish(detections_to_msg(header, frame.result.detections))
        fused = self.p["publish.fused"] and self.fused.get_subscription_count() > 0
        annotate = self.p["publish.annotated"] and self.annotated.get_subscription_count() > 0
        if fused or annotate:
            self._images.put((header, frame, class_names, fused, annotate))

    def _publish_images(self) -> None:
        while (job := self._images.take()) is not None:
            with self._building:
                t0 = time.perf_counter()
                try:
                    self._publish_frame_images(*job)
                    self.stats.record_stage("image_publish", (time.perf_counter() - t0) * 1e3)
                except Exception as exc:  # keep the thread alive; the next frame may be fine
                    self.errors.report("image_publish", f"images of a pair not published: {exc!r}")
            job = None  # not kept while idle: the frame holds the engine's output tensors

    def _publish_frame_images(
        self,
        header: Header,
        frame: FrameOutput,
        class_names: list[str],
        fused: bool,
        annotate: bool,
    ) -> None:
        rgb, result = frame.rgb, frame.result
        # the colour merge runs once per frame, shared by both images when both are watched
        colour = result.fused_rgb(rgb) if annotate else None
        if fused:
            if self.p["fused_encoding"] == "mono8":
                self.fused.publish(image_to_msg(result.fused_luma, "mono8", header))
            else:
                bgr = rgb_to_bgr(colour) if colour is not None else result.fused_bgr(rgb)
                self.fused.publish(image_to_msg(bgr, "bgr8", header))
            self._publish_camera_info(header, rgb.shape[1], rgb.shape[0])
        if annotate:
            annotated = draw_detections(colour, result.detections, class_names)  # a copy
            self.annotated.publish(image_to_msg(rgb_to_bgr(annotated), "bgr8", header))

    def _publish_camera_info(self, header: Header, width: int, height: int) -> None:
        """The RGB camera's CameraInfo restamped for the fused image (same pixels, same model)."""
        info = self.camera_info
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
        self.fused_info.publish(out)


def output_header(pair: Pair, rgb_frame_id: str | None) -> Header:
    """Every output is in RGB pixels, so it carries the RGB camera's frame; in thermal_only
    fallback (thermal registered into RGB pixels) with the thermal stamp."""
    if pair.rgb is not None:
        return pair.rgb.header
    if rgb_frame_id is None:  # no RGB frame ever seen: the thermal grid is the only one
        return pair.thermal.header
    return Header(stamp=pair.thermal.header.stamp, frame_id=rgb_frame_id)
