"""`gifnet-fuse-bag` (`ros2 run gifnet_ros fuse_bag`):
fuse the stamp-paired images of one recorded bag into a new bag.
"""

from gifnet_ros.offline.bag_fusion import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
