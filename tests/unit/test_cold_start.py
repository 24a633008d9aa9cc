"""What a cold `corpusmill ingest` pays before its first batch stays paid for once.

Each check runs in a fresh interpreter (subprocess): another test's imports must not hide
a module that crept onto the path. Figures: docs/BENCHMARKS.md, "Cold start".
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from corpusmill.errors import InputError

ROOT = Path(__file__).resolve().parents[2]

# What the CLI and the ingest job's wiring import before the run starts.
INGEST_WIRING = [
    "app.cli",
    "app.progress",
    "app.runs",
    "resources",
    "assets.jobs",
    "assets.checks",
    "definitions",
]
# Loaded by the run itself, when a step needs them (lancedb at the first table, torch and
# transformers with the tokenizer and the weights), so `--help`, a bad path or a run with
# nothing to embed does not pay for them up front.
LAZY = ["torch", "transformers", "lancedb", "sentence_transformers"]
# Never needed to ingest: the query service, the UI, the Ray executor, peers' stacks.
UNUSED = [
    "ray",
    "fastapi",
    "uvicorn",
    "starlette",
    "dagster_webserver",
    "dagster_graphql",
    "sklearn",
    "scipy",
    "pandas",
    "onnxruntime",
]


def _python(script: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_ingest_wiring_imports_no_heavy_or_unused_module():
    script = (
        "import importlib, json, sys\n"
        f"for m in {INGEST_WIRING!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    loaded = set(json.loads(_python(script)))
    assert "dagster" in loaded and "app.runs" in loaded  # the scan sees what it imports
    assert sorted(m for m in LAZY + UNUSED if m in loaded) == []


def test_the_command_process_collects_for_a_one_shot_process():
    """`main()` as the process's command raises the full-collection threshold and freezes
    the heap at the end (the exit's final collection took 1.5-4 s); `main(argv)` from
    another program leaves the collector alone."""
    script = (
        "import gc, json, sys\n"
        "from app.cli import main\n"
        "before = gc.get_threshold()\n"
        "rc_in = main(['ingest', '/nonexistent/corpus'])\n"
        "after_in = (gc.get_threshold(), gc.get_freeze_count())\n"
        "sys.argv = ['corpusmill', 'ingest', '/nonexistent/corpus']\n"
        "rc = main()\n"
        "print(json.dumps([before, rc_in, after_in, rc, gc.get_threshold(), "
        "gc.get_freeze_count()]))\n"
    )
    before, rc_in, (threshold_in, frozen_in), rc, threshold, frozen = json.loads(_python(script))
    assert rc_in == rc == InputError.exit_code
    assert threshold_in == before and frozen_in == 0
    assert threshold[:2] == before[:2] and threshold[2] == 1000 and frozen > 0


def test_a_query_with_the_probe_cached_imports_no_transformers(tiny_embedder_path, tmp_path):
    """The first load on a machine probes (model/probe.py) and records the forward and the
    tokenizer facts; a later cold process that embeds a query builds the packed forward
    from the safetensors files and tokenises with `tokenizers`: no Transformers import
    (~2 s of a cold `corpusmill search`), and the very vectors the first process computed
    (a query vector must match what ingest stored for the same text). Where the packed forward does not apply or lost
    its probe, Transformers' model is what runs, and this is skipped."""
    import pytest

    script = (
        "import json, sys\n"
        "from corpusmill.config import prepare_process\n"
        "prepare_process()\n"
        "from corpusmill.model import Model, ModelSpec\n"
        f"spec = ModelSpec(path={str(tiny_embedder_path)!r}, cache_dir={str(tmp_path)!r})\n"
        "m = Model(spec)\n"
        "rows = m.embed(['a query about cells', 'naïve café — a longer second query'])\n"
        "print(json.dumps([m.lineage()['forward_path'], m.tokens.backend, "
        "'transformers' in sys.modules, rows.tolist()]))\n"
    )
    path, backend, _, rows = json.loads(_python(script))  # probes, fills the cache
    if path != "bert_cpu" or backend != "tokenizers":
        pytest.skip(f"this machine runs {path} with the {backend} tokenizer")
    assert json.loads(_python(script)) == ["bert_cpu", "tokenizers", False, rows]
