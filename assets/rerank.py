"""rerank_scores: every query scored against its top-k chunks of each shard.

Scored by the cross-encoder resource (`reranker`) when CORPUSMILL_RERANKER (or the
resource's `model_path`) names a local model, else by the resident bi-encoder, and the
`scorer` column and metadata say which.

(No `from __future__ import annotations` in Dagster modules: Dagster reads the config
and resource annotations at decoration time.)
"""

import dagster as dg

from assets.embeddings import embeddings
from assets.partitions import STORE_POOL, one_run, shards
from corpusmill.settings import Settings
from resources import CrossEncoderResource, EmbedderResource, LanceStoreResource

_settings = Settings.from_env()


class RerankConfig(dg.Config):
    """Which queries to score, and how many candidates per query and shard."""

    queries: str = _settings.queries  # JSONL of {"id", "text"}; empty: the built-in set
    k: int = _settings.rerank_k


@dg.asset(
    deps=[embeddings],
    partitions_def=shards,
    backfill_policy=one_run,
    pool=STORE_POOL,
    group_name="corpus",
    kinds={"pytorch", "lancedb"},
)
def rerank_scores(
    context: dg.AssetExecutionContext,
    config: RerankConfig,
    store: LanceStoreResource,
    embedder: EmbedderResource,
    reranker: CrossEncoderResource,
) -> dg.MaterializeResult:
    """Scores of (query, chunk) pairs for each query's k nearest chunks in each shard.
    Pairs whose query text, chunk content and reranker are unchanged keep their score;
    re-materialising with nothing changed writes nothing."""
    from corpusmill.errors import ConfigError
    from corpusmill.queries import load_queries
    from corpusmill.rerank import PairScorer, sync_rerank_scores

    if config.k < 1:
        raise ConfigError(f"k={config.k} must be >= 1 (CORPUSMILL_RERANK_K)")
    queries = load_queries(config.queries)
    scorer = PairScorer(embedder, reranker)
    if not scorer.cross:
        context.log.info(
            "no cross-encoder configured (CORPUSMILL_RERANKER): scoring pairs with the "
            f"bi-encoder {scorer.model_id}"
        )
    db = store.store()
    with db.write_lock():
        report = sync_rerank_scores(db, queries, context.partition_keys, scorer, k=config.k)
    meta = report.as_metadata()
    meta.update((reranker if scorer.cross else embedder).lineage())
    meta["query_set"] = config.queries or "built-in (Python docs)"
    meta["table_version"] = db.version("rerank_scores")
    meta["partitions"] = len(context.partition_keys)
    return dg.MaterializeResult(metadata=meta)
