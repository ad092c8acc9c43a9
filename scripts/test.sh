#!/usr/bin/env bash
# Set up whatever is missing, check lint, formatting and types (any violation stops here), then run
# every test tier: tiny model, synthetic, and the real bundled models (marked slow), plus the
# notebooks top to bottom.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# ruff and mypy as pinned in requirements.lock, configured in pyproject.toml
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy workbench
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
