"""Running the ingest job in a test: settings around a tiny model, with small chunks.

(The tiny models read 64 tokens at most.)
"""

from __future__ import annotations

import dagster as dg

from app.runs import run_ingest
from corpusmill.config import Settings

CHUNKS = {"chunk_tokens": 24, "chunk_overlap": 4}  # chunks that fit the tiny models' 64 tokens


def tiny_settings(db_uri: str, model_path, storage_options=None, **overrides) -> Settings:
    """The ingest job's settings: a store at `db_uri`, the embedder at `model_path` in
    float32 on Transformers' forward (exact, so runs compare: the probe may pick either
    forward per load and thread count, and their rows differ in the last bits), no
    cross-encoder, chunks that fit the tiny model; `overrides` replace any other setting."""
    values = {
        "db": str(db_uri),
        "storage_options": dict(storage_options or {}),
        "model": str(model_path),
        "dtype": "float32",
        "forward": "transformers",
        **CHUNKS,
        **overrides,
    }
    return Settings(**values)


def ingest(sources, settings: Settings, **kw):
    """`run_ingest` over `sources` with a throwaway instance by default."""
    kw.setdefault("instance", dg.DagsterInstance.ephemeral())
    return run_ingest([str(s) for s in sources], settings, **kw)
