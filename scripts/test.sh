#!/usr/bin/env bash
# Set up the venv with test extras and run the default test suite (slow tests excluded; `-m slow` for those).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec .venv/bin/python -m pytest "$@"
