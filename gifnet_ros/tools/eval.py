"""`gifnet-eval` (`ros2 run gifnet_ros eval`):
fuse image pairs with several methods and report every metric.
"""

from gifnet_ros.offline.evaluate import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
