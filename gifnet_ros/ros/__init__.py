"""The ROS 2 node and its parts: parameters, camera heads, the worker thread, diagnostics.

The only layer that imports rclpy; it builds on gifnet_ros.fusion and gifnet_ros.models.
"""
