"""`gifnet-train-tim` (`ros2 run gifnet_ros train_tim`): train TIM weights on the shared data."""

from gifnet_ros.offline.train_tim import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
