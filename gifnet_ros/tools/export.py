"""`gifnet-export` (`ros2 run gifnet_ros export`):
export a network to ONNX and check it against PyTorch.
"""

from gifnet_ros.models.onnx import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
