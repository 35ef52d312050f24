"""ament_python package definition; also installs with pip in a plain venv."""

import sys
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "gifnet_ros"

# The command-line tools, by ROS executable name (snake_case): `ros2 run gifnet_ros NAME`.
TOOLS = {
    "fusion_node": "gifnet_ros.ros.node:main",
    "fusion_lifecycle_node": "gifnet_ros.ros.node:lifecycle_main",
    "fuse": "gifnet_ros.tools.fuse:main",
    "fuse_bag": "gifnet_ros.tools.fuse_bag:main",
    "fuse_bags": "gifnet_ros.tools.fuse_bags:main",
    "make_bag": "gifnet_ros.tools.make_bag:main",
    "calibrate": "gifnet_ros.tools.calibrate:main",
    "eval": "gifnet_ros.tools.eval:main",
    "export": "gifnet_ros.tools.export:main",
    "weights": "gifnet_ros.tools.weights:main",
    "demo": "gifnet_ros.tools.demo:main",
    "train_tim": "gifnet_ros.tools.train_tim:main",
    "sync_offset": "gifnet_ros.tools.sync_offset:main",
}


def console_scripts() -> list[str]:
    """Each tool once, named for where it lands.

    `setup.py install` and `setup.py develop` (how colcon, and bloom's Debian rules, install
    an ament_python package) put scripts where setup.cfg says, lib/gifnet_ros, which
    `ros2 run` and `ros2 pkg executables` list: there they keep their ROS names. pip builds
    a wheel instead and puts them on PATH, shared with every other package: there they are
    prefixed, gifnet-NAME with dashes (gifnet-fuse-bag, ...).
    """
    ros_layout = not {"install", "develop"}.isdisjoint(sys.argv[1:])
    return [
        f"{name if ros_layout else 'gifnet-' + name.replace('_', '-')} = {target}"
        for name, target in TOOLS.items()
    ]


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    # TIM weights trained by this project (gifnet_ros/models/tim.py, docs/tim.md).
    package_data={PACKAGE: ["data/*.pt"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    install_requires=["setuptools"],
    # How `colcon test` picks pytest for an ament_python package (tests_require is gone).
    extras_require={"test": ["pytest"]},
    zip_safe=True,
    maintainer="gifnet_ros maintainers",
    maintainer_email="maintainers@users.noreply.b-seed-a61c28ea.example",
    description="GIFNet infrared/visible image fusion for ROS 2: live node and offline rosbag tool",
    license="MIT",
    python_requires=">=3.10",
    entry_points={"console_scripts": console_scripts()},
)
