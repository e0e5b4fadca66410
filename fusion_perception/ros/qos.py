"""QoS helpers: tell the user loudly when a camera's publisher and our subscription cannot match.

A best-effort camera and a reliable subscriber never connect, and by default ROS says nothing: the
most common "no detections" report. The subscription's incompatible-QoS event names both profiles.
"""

from __future__ import annotations

from collections.abc import Callable

from rclpy.node import Node
from rclpy.qos import QoSProfile

try:  # Iron and newer
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks


def describe(profile: QoSProfile, with_depth: bool = True) -> str:
    """Readable profile; a remote publisher's depth is not sent over discovery, so it is left out."""
    text = (
        f"reliability={profile.reliability.name.lower()}, "
        f"durability={profile.durability.name.lower()}"
    )
    return f"{text}, depth={profile.depth}" if with_depth else text


def publisher_name(info) -> str:
    if info.node_name.startswith("_NODE_NAME_UNKNOWN"):
        return "a publisher (node name not yet discovered)"
    return f"{info.node_namespace.rstrip('/')}/{info.node_name}"


def watch_subscription(
    node: Node, topic: str, ours: QoSProfile, on_lost: Callable[[int], None] | None = None
) -> SubscriptionEventCallbacks:
    """Event callbacks: an incompatible QoS logs an error naming our profile and every
    publisher's; messages the middleware reports lost are handed to `on_lost` (their count)."""

    def on_incompatible(event) -> None:
        resolved = node.resolve_topic_name(topic)
        offered = [
            f"{publisher_name(info)}: {describe(info.qos_profile, with_depth=False)}"
            for info in node.get_publishers_info_by_topic(resolved)
        ]
        node.get_logger().error(
            f"incompatible QoS on {resolved} (policy {event.last_policy_kind.name}, "
            f"{event.total_count} publisher(s)): subscription requests {describe(ours)}; "
            f"publishers offer {'; '.join(offered) or 'unknown'}. Set the *_qos.reliability "
            "parameter to match the camera driver."
        )

    def on_message_lost(event) -> None:
        if on_lost is not None:
            on_lost(int(event.total_count_change))

    return SubscriptionEventCallbacks(
        incompatible_qos=on_incompatible, message_lost=on_message_lost
    )
