#!/usr/bin/env bash
# Set up whatever is missing, then run the main job on the bundled SmolLM2 (extra arguments
# go to the command, e.g. --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
# OpenMP busy-waiting made torch 2-10x slower whenever another process shared the cores
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
exec .venv/bin/workbench reproduce format --model smollm2-135m-instruct --out runs/format "$@"
