"""ament_python package definition; also installs with pip in a plain venv."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "gifnet_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="gifnet_ros maintainers",
    maintainer_email="maintainers@users.noreply.b-seed-a61c28ea.example",
    description="GIFNet infrared/visible image fusion for ROS 2: live node and offline rosbag tool",
    license="MIT",
    tests_require=["pytest"],
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            # ros2 run names (ROS convention: snake_case executables)
            "fusion_node = gifnet_ros.node:main",
            "fusion_lifecycle_node = gifnet_ros.node:lifecycle_main",
            "fuse_bag = gifnet_ros.bag_tool:main",
            # plain-venv names
            "gifnet-fusion-node = gifnet_ros.node:main",
            "gifnet-fusion-lifecycle-node = gifnet_ros.node:lifecycle_main",
            "gifnet-eval = gifnet_ros.evaluate:main",
            "gifnet-export = gifnet_ros.export:main",
            "gifnet-fuse-bag = gifnet_ros.bag_tool:main",
            "gifnet-make-bag = gifnet_ros.make_bag:main",
            "gifnet-fuse = gifnet_ros.cli:main",
            "gifnet-weights = gifnet_ros.weights:main",
            "gifnet-demo = gifnet_ros.demo:main",
        ],
    },
)
