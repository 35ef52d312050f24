"""`gifnet-fuse-bags` (`ros2 run gifnet_ros fuse_bags`):
fuse many bags, on this machine or a Ray cluster.
"""

from gifnet_ros.offline.fleet import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
