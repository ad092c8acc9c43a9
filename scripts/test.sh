#!/usr/bin/env bash
# Set up whatever is missing, then run every test tier: tiny model, synthetic, and the real
# bundled models (marked slow), plus the notebooks top to bottom.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
