"""The one `main()` shape of the package's nodes: spin until Ctrl-C, and turn a start-up
configuration error into one log line naming the problem and exit code 2 instead of a traceback."""

from __future__ import annotations

from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node


def spin_node(factory: Callable[[], Node], name: str, args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = None
    try:
        node = factory()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, FileNotFoundError) as exc:  # CheckpointError is a ValueError
        rclpy.logging.get_logger(name).fatal(f"cannot start: {exc}")
        return 2
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
