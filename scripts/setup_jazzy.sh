#!/usr/bin/env bash
# Create (or reuse) .venv-jazzy: the project against ROS 2 Jazzy's rclpy, messages and RMW
# (requirements-jazzy.txt) instead of Kilted's, for the node and launch tests that
# scripts/test.sh runs there after the main suite.
#
# The other dependencies are requirements.txt's pins, less its Kilted ros-* lines and what
# those tests do not use (Ray, colcon). ../shared/ros is NOT installed here: its launch,
# ros2cli and message_filters wheels are Kilted-era builds, so with them this environment
# would test a mix no Jazzy user has; without them it runs the node as a ROS install
# without message_filters does (the package's own stamp pairing), which .venv no longer does.
#
# Reused when a stamp written at the end of a complete install matches the inputs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv-jazzy"
stamp="$venv/.gifnet_ros-setup-complete"
others="$(grep -v -E '^(ros-|ray==|colcon-)' requirements.txt)"
want="$(cat requirements-jazzy.txt setup.py <(echo "$others") | sha256sum | cut -d' ' -f1)"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/python" ]]; then
  exit 0
fi

source "$root/scripts/python311.sh"  # sets $py

rm -f "$stamp"
[[ -x "$venv/bin/python" ]] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  -r requirements-jazzy.txt -r <(echo "$others")
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
echo "$want" > "$stamp"
echo "setup_jazzy: environment ready in $venv" >&2
