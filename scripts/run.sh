#!/usr/bin/env bash
# The main command: set up .venv if needed, build the demo artifact if missing (50K items,
# a few minutes once), and serve it on http://127.0.0.1:8000 (local Ray, CPU). Ctrl-C stops.
# Extra arguments go to `recsys serve` (see `recsys serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export HF_HUB_OFFLINE=1
exec .venv/bin/recsys serve "$@"
