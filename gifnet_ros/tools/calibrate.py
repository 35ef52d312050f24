"""`gifnet-calibrate` (`ros2 run gifnet_ros calibrate`):
fit the thermal-to-RGB homography from checkerboard views.
"""

from gifnet_ros.offline.calibrate import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
