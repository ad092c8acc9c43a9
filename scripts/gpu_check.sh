#!/usr/bin/env bash
# The GPU check: device correctness and a generation benchmark on one GPU, in a few minutes (well
# under 10 on an H100). The GPU machine has no network, its own Python (3.12, torch with CUDA,
# transformers) and no weight cache; what it lacks travels in .gpu_check/ (about 6 MB, ignored by
# git: carry it):
#   bash scripts/gpu_check.sh --prepare   here: the pure-Python wheels it lacks (transformer-lens,
#                                         datasets, dill, multiprocess, if-verifiable, nltk,
#                                         langdetect, immutabledict, defusedxml) and SmolLM2's
#                                         config and tokenizer (the weights stay: the benchmark
#                                         model is randomly initialised in SmolLM2's shape)
#   bash scripts/gpu_check.sh             there: the tests marked gpu, then scripts/gpu_check.py;
#                                         results in $OUT (or ./gpu_check_out)
#   bash scripts/gpu_check.sh --cpu       a dry run here, on the CPU, small sizes
# Exit status 0 when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=.gpu_check
WHEELS=(transformer-lens==4.3.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
        if-verifiable==0.1.2 nltk==3.10.4 immutabledict==4.3.1 defusedxml==0.7.1)

if [ "${1:-}" = "--prepare" ]; then
  PIP=${PIP:-.venv/bin/pip}
  rm -rf "$KIT"; mkdir -p "$KIT/wheels" "$KIT/smollm2"
  "$PIP" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform any -d "$KIT/wheels" "${WHEELS[@]}"
  "$PIP" wheel -q --no-deps -w "$KIT/wheels" langdetect==1.0.9  # on PyPI as an sdist only
  src=$(.venv/bin/python -c "from workbench import weights; print(weights.convert(weights.BUNDLED['smollm2-135m-instruct']))")
  cp "$src"/{config.json,generation_config.json,tokenizer_config.json,chat_template.jinja} "$KIT/smollm2/"
  gzip -9 -c "$src/tokenizer.json" > "$KIT/smollm2/tokenizer.json.gz"  # 3.5 MB -> ~1 MB
  grep -qx "/$KIT/" .git/info/exclude 2>/dev/null || echo "/$KIT/" >> .git/info/exclude
  echo "prepared $KIT ($(du -sh "$KIT" | cut -f1)); carry it: run(carry=[\"$KIT\"])"
  exit 0
fi

[ -d "$KIT/wheels" ] || { echo "no $KIT: run 'bash scripts/gpu_check.sh --prepare' first" >&2; exit 2; }
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
assets=$(mktemp -d)
cp "$KIT"/smollm2/*.json "$KIT"/smollm2/*.jinja "$assets/"
gunzip -c "$KIT/smollm2/tokenizer.json.gz" > "$assets/tokenizer.json"
if [ "${1:-}" = "--cpu" ]; then
  PY=${PYTHON:-.venv/bin/python}
  flags=(--cpu)
else
  PY=${PYTHON:-python3}
  flags=()
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$KIT"/wheels/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
"$PY" -m pip list 2>/dev/null | grep -iE "^(torch|transformers|transformer-lens|tokenizers|huggingface-hub|accelerate|pyarrow|fsspec|datasets) " | tee "$OUT/versions.txt" || true
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/versions.txt"

status=0
# the tests marked gpu (they skip where there is no CUDA)
"$PY" -m pytest -q -p no:cacheprovider tests/test_devices.py -m gpu 2>&1 | tee "$OUT/pytest_gpu.txt" || status=1
"$PY" scripts/gpu_check.py "${flags[@]}" --assets "$assets" --out "$OUT" || status=1
rm -rf "$assets"
exit $status
