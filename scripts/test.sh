#!/usr/bin/env bash
# The test command: set up .venv if needed, then lint (ruff), type-check (mypy on recsys/),
# and run the whole test suite (unit + integration against a real local Ray instance).
# Extra arguments go to pytest, e.g. ./scripts/test.sh -m "not slow".
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export HF_HUB_OFFLINE=1
# one command per line: under `set -e` a failure inside an `a && b` list does not stop the
# script, and a lint error once passed CI that way
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; exec .venv/bin/python -m pytest "$@"
