#!/usr/bin/env bash
# GPU benchmark and GPU tests in one command, for a CUDA machine with torch and
# transformers installed (sentence-transformers, pynvml, pytest used where present).
# Finishes in well under 8 minutes on an H100/H200:  bash bench/gpu.sh
# Results: $OUT/gpu.json (or bench/out/gpu.json) and the last line printed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
OUT_DIR="${OUT:-bench/out}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python3}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
# The tests only need the engine; pytest reads pyproject.toml for the markers.
timeout 150 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/gpu 2>&1 | tail -15
tests_rc=${PIPESTATUS[0]}
timeout 330 "$PY" bench/gpu_bench.py --docs "${GPU_BENCH_DOCS:-600}" --rounds 2 --out "$OUT_DIR/gpu.json"
bench_rc=$?
echo "gpu tests rc=$tests_rc, gpu bench rc=$bench_rc"
exit $(( tests_rc != 0 || bench_rc != 0 ))
