"""Recorded data without a running graph: bags read and written, bag fusion, Ray fleets,
calibration, evaluation, TIM training and clock-offset estimation.

Builds on gifnet_ros.fusion and gifnet_ros.models; never imports gifnet_ros.ros or the tools.
"""
