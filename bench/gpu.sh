#!/usr/bin/env bash
# GPU benchmark and GPU tests in one command, for a CUDA machine with torch and
# transformers installed (sentence-transformers, nvidia-ml-py, pytest used where present).
# Finishes in well under 8 minutes on an H100/H200:  make bench-gpu  (or bash bench/gpu.sh)
# What that machine lacks (MiniLM's weights, SciFact) travels in .gpu/, made here by
# `make gpu-pack` and carried with the working tree; without it the bench falls back to
# random weights and the Python docs, and the MiniLM tests skip.
# Run from the repository root with `python -m`, so corpusmill and bench import from the
# checkout without being installed (nothing edits sys.path or PYTHONPATH).
# Results: $OUT/gpu.json (or bench/out/gpu.json) and the last line printed; the Ray path
# with GPU actors, where ray and pylance are installed: $OUT/ray_gpu.json.
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
# The Ray path with real GPU actors (bench/ray_gpu.py): a local single-node cluster, one
# actor per GPU, against the in-process engine on the same GPU. It needs ray and pylance
# (the `scale` extra) on this machine, and root for the private network namespace a local
# Ray cluster is kept in (tools/netns.py); without them it says so and is not counted.
ray_rc=0
if "$PY" -c "import ray, lance, lancedb" 2>/dev/null && [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then
  timeout "${RAY_GPU_TIMEOUT:-240}" "$PY" -m tools.netns -- "$PY" -m bench.ray_gpu \
    --chunks "${RAY_GPU_CHUNKS:-20000}" ${MODEL:+--model "$MODEL"} "${CORPUS_ARGS[@]}" \
    --out "$OUT_DIR/ray_gpu.json"
  ray_rc=$?
else
  echo "ray gpu: skipped (needs ray and pylance importable, root and unshare)"
fi
echo "gpu tests rc=$tests_rc, gpu bench rc=$bench_rc, ray gpu rc=$ray_rc"
exit $(( tests_rc != 0 || bench_rc != 0 || ray_rc != 0 ))
