"""RGB + thermal fusion and detection for ROS 2; everything outside `ros/` imports no ROS."""

__version__ = "0.1.0"
