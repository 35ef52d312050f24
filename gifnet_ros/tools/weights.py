"""`gifnet-weights` (`ros2 run gifnet_ros weights`): check or fetch the GIFNet checkpoint."""

from gifnet_ros.models.weights import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
