"""Deprecated module path: use gifnet_ros.models.gifnet
(the package is split into layers)."""

import warnings

from gifnet_ros.models.gifnet import *  # noqa: F403

warnings.warn(
    "gifnet_ros.network is deprecated; import gifnet_ros.models.gifnet",
    DeprecationWarning,
    stacklevel=2,
)
