#!/usr/bin/env bash
# GPU benchmark and GPU tests in one command, for a CUDA machine with torch and
# transformers installed (sentence-transformers, nvidia-ml-py, pytest used where present).
# Finishes in well under 8 minutes on an H100/H200:  bash bench/gpu.sh
# What that machine lacks (MiniLM's weights, SciFact) travels in .gpu/, made here by
# `python bench/gpu_pack.py` and carried with the working tree; without it the bench falls
# back to random weights and the Python docs, and the MiniLM tests skip.
# Results: $OUT/gpu.json (or bench/out/gpu.json) and the last line printed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
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
timeout 330 "$PY" bench/gpu_bench.py --docs "${GPU_BENCH_DOCS:-2000}" --rounds "${GPU_BENCH_ROUNDS:-2}" \
  --device "${GPU_BENCH_DEVICE:-cuda}" ${MODEL:+--model "$MODEL"} "${CORPUS_ARGS[@]}" \
  --out "$OUT_DIR/gpu.json"
bench_rc=$?
# How fast this machine's CPUs can feed the GPU (no GPU work): from texts vs stored ids.
timeout 90 "$PY" bench/host_feed.py --docs "${GPU_BENCH_DOCS:-2000}" --rounds 2 \
  ${MODEL:+--model "$MODEL"} "${CORPUS_ARGS[@]}" | tee "$OUT_DIR/host_feed.txt" | tail -1
echo "gpu tests rc=$tests_rc, gpu bench rc=$bench_rc"
exit $(( tests_rc != 0 || bench_rc != 0 ))
