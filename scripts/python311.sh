# Sourced by setup.sh and setup_jazzy.sh: sets $py to the Python 3.11 to build a venv with
# ($PYTHON, else python3.11, else python3), or stops with the reason. The ROS 2 wheels on the
# package index (Kilted's and Jazzy's) are built for CPython 3.11 only.
py="${PYTHON:-}"
if [[ -z "$py" ]]; then
  if command -v python3.11 >/dev/null 2>&1; then py=python3.11; else py=python3; fi
fi
if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
  echo "$(basename "$0"): $py is not Python 3.11; the ROS 2 wheels need 3.11 (set PYTHON=...)" >&2
  exit 1
fi
