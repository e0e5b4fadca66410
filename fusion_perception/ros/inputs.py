"""The node's subscriptions: the two cameras (raw or compressed; paired by the builtin engine or
by message_filters) and the RGB camera's CameraInfo. Callbacks only hand messages on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from fusion_perception.pairing import STREAMS
from fusion_perception.ros import params as node_params
from fusion_perception.ros.qos import watch_subscription


def camera_qos(p: dict[str, Any], stream: str) -> QoSProfile:
    reliable = p[f"{stream}_qos.reliability"] == "reliable"
    return QoSProfile(
        depth=p[f"{stream}_qos.depth"],
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
    )


class CameraInputs:
    """Subscriptions alive while the node is active; ``destroy`` drops them all."""

    def __init__(
        self,
        node: Node,
        p: dict[str, Any],
        on_image: Callable[[str, Any], None],
        on_lost: Callable[[str, int], None],
        on_camera_info: Callable[[CameraInfo], None],
    ) -> None:
        self.node, self.p, self.on_image = node, p, on_image
        self.subscriptions: list[Any] = []
        self._synchronizer = None  # message_filters keeps no reference of its own
        types = {s: CompressedImage if p[f"{s}_compressed"] else Image for s in STREAMS}
        if p["sync.backend"] == "message_filters":
            self._synchronize(types)
        else:
            for stream, msg_type in types.items():
                qos, topic = camera_qos(p, stream), p[f"{stream}_topic"]
                self.subscriptions.append(
                    node.create_subscription(
                        msg_type,
                        topic,
                        lambda msg, s=stream: on_image(s, msg),
                        qos,
                        event_callbacks=watch_subscription(
                            node, topic, qos, lambda n, s=stream: on_lost(s, n)
                        ),
                    )
                )
        self.subscriptions.append(
            node.create_subscription(
                CameraInfo, node_params.camera_info_topic(p), on_camera_info, camera_qos(p, "rgb")
            )
        )

    def _synchronize(self, types: dict[str, type]) -> None:
        """message_filters pairs the streams; each matched pair then goes through the builtin
        engine too (same slop, so it pairs them alike), which keeps the counters and diagnostics."""
        import message_filters  # checked at configure

        p = self.p
        subscribers = [
            message_filters.Subscriber(
                self.node, msg_type, p[f"{stream}_topic"], qos_profile=camera_qos(p, stream)
            )
            for stream, msg_type in types.items()
        ]
        if p["sync.mode"] == "exact":
            synchronizer = message_filters.TimeSynchronizer(subscribers, p["sync.queue_size"])
        else:
            synchronizer = message_filters.ApproximateTimeSynchronizer(
                subscribers, p["sync.queue_size"], p["sync.slop"]
            )
        synchronizer.registerCallback(self._on_synced_pair)
        self._synchronizer = synchronizer
        self.subscriptions += [subscriber.sub for subscriber in subscribers]

    def _on_synced_pair(self, rgb: Any, thermal: Any) -> None:
        self.on_image("rgb", rgb)
        self.on_image("thermal", thermal)

    def destroy(self) -> None:
        for subscription in self.subscriptions:
            self.node.destroy_subscription(subscription)
        self.subscriptions = []
