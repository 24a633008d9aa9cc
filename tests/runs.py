"""Running the ingest job in a test: resources around a tiny model, and small chunks.

(Dagster reads resource annotations at run time, and the tiny models read 64 tokens.)
"""

from __future__ import annotations

import dagster as dg

from app.runs import run_ingest
from resources import (
    CrossEncoderResource,
    EmbedderResource,
    LanceStoreResource,
    PipelineSettingsResource,
)

CHUNKS = {"chunk_tokens": 24, "chunk_overlap": 4}  # chunks that fit the tiny models' 64 tokens


def tiny_resources(db_uri: str, model_path, storage_options=None, **embedder) -> dict:
    """The ingest job's resources: a store at `db_uri`, the embedder at `model_path` in
    float32 (exact, so runs compare), no cross-encoder; `embedder` overrides its fields."""
    return {
        "store": LanceStoreResource(uri=db_uri, storage_options=storage_options or {}),
        "settings": PipelineSettingsResource(),
        "embedder": EmbedderResource(model_path=str(model_path), dtype="float32", **embedder),
        "reranker": CrossEncoderResource(),
    }


def ingest(sources, resources, **kw):
    """`run_ingest` over `sources` with small chunks and a throwaway instance by default."""
    kw.setdefault("chunk_config", CHUNKS)
    kw.setdefault("instance", dg.DagsterInstance.ephemeral())
    return run_ingest([str(s) for s in sources], resources=resources, **kw)
