"""`gifnet-make-bag` (`ros2 run gifnet_ros make_bag`):
write a thermal/RGB test bag from videos or image folders.
"""

from gifnet_ros.offline.make_bag import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
