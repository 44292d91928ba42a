#!/usr/bin/env bash
# The README's test command runs this after installing: lint, then the default (non-slow, non-GPU) suite.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check .
ruff format --check . || echo "ruff format: files would be reformatted (not fatal)"
exec python -m pytest -p no:cacheprovider --durations=15 "$@"
