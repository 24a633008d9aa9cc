"""Run the asset graph in-process through Dagster: what `corpusmill ingest` and the tests use.

There is no second code path: this calls `dagster.materialize` on the same assets that
`definitions.py` lists, with resources built by the same `build_resources`, for a range
of shards in one run (so the model is loaded once), and summarises the metadata.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import dagster as dg

from assets.corpus import chunked_documents, raw_corpus
from assets.embeddings import embeddings
from assets.partitions import partition_range_tags
from assets.rerank import rerank_scores
from corpusmill.ids import ALL_PARTITIONS


def instance_for_cli() -> dg.DagsterInstance:
    """The persistent instance when DAGSTER_HOME is set (runs show up in the UI)."""
    if os.environ.get("DAGSTER_HOME"):
        os.makedirs(os.environ["DAGSTER_HOME"], exist_ok=True)
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def run_ingest(
    sources: Sequence[str],
    *,
    resources: dict[str, Any],
    partitions: Sequence[str] = ALL_PARTITIONS,
    instance=None,
    corpus_config: dict[str, Any] | None = None,
    chunk_config: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    log_level: str = "WARNING",
    with_rerank: bool = False,
    rerank_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Materialise raw_corpus -> chunked_documents -> embeddings (-> rerank_scores when
    `with_rerank`) for `sources` over `partitions` in one run, with `resources` as
    `resources.build_resources(settings)` makes them; returns a summary dict."""
    t0 = time.perf_counter()
    run_config = {
        "ops": {
            "raw_corpus": {"config": {"sources": list(sources), **(corpus_config or {})}},
            "chunked_documents": {"config": dict(chunk_config or {})},
        },
        "loggers": {"console": {"config": {"log_level": log_level}}},
    }
    selection = [raw_corpus, chunked_documents, embeddings]
    if with_rerank:
        selection.append(rerank_scores)
        run_config["ops"]["rerank_scores"] = {"config": dict(rerank_config or {})}
    result = dg.materialize(
        selection,
        run_config=run_config,
        resources=resources,
        instance=instance,
        tags={**partition_range_tags(partitions), **(tags or {})},
    )
    return summarise(result, time.perf_counter() - t0)


def _values(event) -> dict[str, Any]:
    meta = event.event_specific_data.materialization.metadata
    return {k: getattr(v, "value", v) for k, v in meta.items()}


def summarise(result, seconds: float) -> dict[str, Any]:
    by_asset: dict[str, dict[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        key = event.event_specific_data.materialization.asset_key.to_user_string()
        by_asset[key] = _values(event)
    docs = by_asset.get("raw_corpus", {})
    chunks = by_asset.get("chunked_documents", {})
    emb = by_asset.get("embeddings", {})
    rerank = by_asset.get("rerank_scores", {})
    return {
        "success": result.success,
        "run_id": result.run_id,
        "documents": docs.get("documents", 0),
        "documents_new": docs.get("new", 0),
        "documents_changed": docs.get("changed", 0),
        "documents_deleted": docs.get("deleted", 0),
        "quarantined": docs.get("quarantined", 0),
        "chunks": chunks.get("chunks_total", 0),
        "chunks_embedded": emb.get("chunks_embedded", 0),
        "chunks_reused": emb.get("chunks_reused", 0),
        "rows": emb.get("rows", 0),
        "tokens": emb.get("tokens", 0),
        "pretokenized_items": emb.get("pretokenized_items", 0),
        "tokens_per_s": emb.get("tokens_per_s", 0.0),
        "padding_fraction": emb.get("padding_fraction", 0.0),
        "model_load_seconds": emb.get("model_load_seconds", 0.0),
        "model_id": emb.get("model_id", ""),
        "device": emb.get("device", ""),
        "dtype": emb.get("dtype", ""),
        "executor": emb.get("executor", "local"),
        "workers": emb.get("workers", 1),
        "model_loads": emb.get("model_loads", int(bool(emb.get("weights_loaded", False)))),
        "tokens_per_s_worker_mean": emb.get("tokens_per_s_worker_mean", 0.0),
        "commit_seconds": emb.get("commit_seconds", 0.0),
        "rerank_scorer": rerank.get("scorer", ""),
        "rerank_pairs_scored": rerank.get("pairs_scored", 0),
        "rerank_pairs_reused": rerank.get("pairs_reused", 0),
        "rerank_rows": rerank.get("rows", 0),
        "seconds": round(seconds, 2),
    }
