"""The thin ROS 2 adapter: nodes, message conversions, QoS; the only part of the package importing rclpy."""
