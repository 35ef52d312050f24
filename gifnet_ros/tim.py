"""Deprecated module path: use gifnet_ros.models.tim (the package is split into layers)."""

import warnings

from gifnet_ros.models.tim import *  # noqa: F403

warnings.warn(
    "gifnet_ros.tim is deprecated; import gifnet_ros.models.tim", DeprecationWarning, stacklevel=2
)
