"""`gifnet-sync-offset` (`ros2 run gifnet_ros sync_offset`):
estimate a thermal camera's clock offset from a bag.
"""

from gifnet_ros.offline.sync_offset import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
