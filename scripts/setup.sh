#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment at .venv and install the
# pinned dependencies plus this package in editable mode, so that the console
# scripts (gifnet-fuse, gifnet-demo, ...) land in .venv/bin.
#
# Where ../shared/ros (or $GIFNET_SHARED/ros) is present, its upstream ROS 2 Python
# packages (launch, launch_ros, ros2cli and verbs, message_filters, ...) are installed
# too, through its own install.sh: they stand for a ROS install, so the launch, ros2 CLI
# and message_filters tests run instead of skipping.
#
# The environment is reused when a stamp written at the end of a complete
# install matches the current requirements.txt, setup.py and ROS wheel folder: an
# interrupted install is redone, an unchanged one costs nothing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
stamp="$venv/.gifnet_ros-setup-complete"
ros_wheels="${GIFNET_SHARED:-$root/../shared}/ros"
[[ -x "$ros_wheels/install.sh" ]] || ros_wheels=""
want="$(
  cat requirements.txt setup.py
  if [[ -n "$ros_wheels" ]]; then
    cat "$ros_wheels/install.sh"
    (cd "$ros_wheels" && ls -- *.whl)
  fi
)"
want="$(sha256sum <<<"$want" | cut -d' ' -f1)"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/python" ]]; then
  exit 0
fi

source "$root/scripts/python311.sh"  # sets $py

rm -f "$stamp"
[[ -x "$venv/bin/python" ]] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
if [[ -n "$ros_wheels" ]]; then
  bash "$ros_wheels/install.sh" "$venv" >/dev/null
  echo "setup: installed the ROS 2 packages of $ros_wheels" >&2
else
  echo "setup: no ROS wheel folder (../shared/ros); launch, ros2 CLI and message_filters tests will skip" >&2
fi
echo "$want" > "$stamp"
echo "setup: environment ready in $venv" >&2
