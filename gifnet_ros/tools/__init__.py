"""One module per command-line tool (`gifnet-NAME`, `ros2 run gifnet_ros NAME`).

The top layer: nothing in the package imports it.
"""
