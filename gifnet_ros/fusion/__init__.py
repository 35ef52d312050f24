"""Fusing a pair of images, ROS-free: the engine and its precision and memory settings, thermal
stretching, alignment, message conversion, stamp pairing, freeze detection and metrics.

Imports only gifnet_ros.models below it.
"""
