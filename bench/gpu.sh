#!/usr/bin/env bash
# GPU benchmark and GPU tests in one command, for a CUDA machine with torch and
# transformers installed (sentence-transformers, nvidia-ml-py, pytest used where present).
# Finishes in well under 8 minutes on an H100/H200:  make bench-gpu  (or bash bench/gpu.sh)
# What that machine lacks (MiniLM's weights, SciFact) travels in .gpu/, made here by
# `make gpu-pack` and carried with the working tree; without it the bench falls back to
# random weights and the Python docs, and the MiniLM tests skip.
# Run from the repository root with `python -m`, so corpusmill and bench import from the
# checkout without being installed (nothing edits sys.path or PYTHONPATH).
# Results: $OUT/gpu.json (or bench/out/gpu.json) and the last line printed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
OUT_DIR="${OUT:-bench/out}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python3}"
MODEL=""
CORPUS_ARGS=()
if [ -d .gpu/minilm-l6-fp16 ]; then
  MODEL=.gpu/minilm-l6-fp16
  export CORPUSMILL_GPU_TEST_MODEL="$PWD/$MODEL"
fi
[ -f .gpu/scifact.jsonl ] && CORPUS_ARGS=(--corpus .gpu/scifact.jsonl)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
# pyproject's filterwarnings names dagster's warning classes, and this machine may not
# have dagster: the GPU tests need only the engine, so they run with a plain filter.
timeout 150 "$PY" -m pytest -q -p no:cacheprovider -m gpu \
  -o "filterwarnings=ignore::DeprecationWarning" tests/gpu 2>&1 | tail -15
tests_rc=${PIPESTATUS[0]}
timeout 330 "$PY" -m bench.gpu_bench --docs "${GPU_BENCH_DOCS:-2000}" --rounds "${GPU_BENCH_ROUNDS:-2}" \
  --device "${GPU_BENCH_DEVICE:-cuda}" ${MODEL:+--model "$MODEL"} "${CORPUS_ARGS[@]}" \
  --out "$OUT_DIR/gpu.json"
bench_rc=$?
echo "gpu tests rc=$tests_rc, gpu bench rc=$bench_rc"
exit $(( tests_rc != 0 || bench_rc != 0 ))
