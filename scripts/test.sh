#!/usr/bin/env bash
# Set up the environment (reused when complete), lint, and run the test suite. Arguments go
# to pytest. Without arguments (CI), the tests marked `distro` (node and launch) then run a
# second time against ROS 2 Jazzy in .venv-jazzy (scripts/setup_jazzy.sh); GIFNET_JAZZY=0
# skips that part.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
export FASTDDS_BUILTIN_TRANSPORTS="${FASTDDS_BUILTIN_TRANSPORTS:-LARGE_DATA}"
.venv/bin/ruff check .
if [[ $# -gt 0 || "${GIFNET_JAZZY:-1}" == 0 ]]; then
  exec .venv/bin/python -m pytest "$@"
fi
.venv/bin/python -m pytest
echo "test: the node and launch tests against ROS 2 Jazzy (.venv-jazzy)" >&2
bash scripts/setup_jazzy.sh
exec .venv-jazzy/bin/python -m pytest -m distro test/ros
