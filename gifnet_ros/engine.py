"""Deprecated module path: use gifnet_ros.fusion.engine
(the package is split into layers)."""

import warnings

from gifnet_ros.fusion.engine import *  # noqa: F403

warnings.warn(
    "gifnet_ros.engine is deprecated; import gifnet_ros.fusion.engine",
    DeprecationWarning,
    stacklevel=2,
)
