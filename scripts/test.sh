#!/usr/bin/env bash
# Set up the environment (reused when complete), lint, and run the test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
export FASTDDS_BUILTIN_TRANSPORTS="${FASTDDS_BUILTIN_TRANSPORTS:-LARGE_DATA}"
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
