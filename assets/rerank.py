"""rerank_scores: every query scored against its top-k chunks of each shard.

Scored by the cross-encoder resource (`reranker`) when CORPUSMILL_RERANKER names a local
model, else by the resident bi-encoder, and the `scorer` column and metadata say which.

(No `from __future__ import annotations` in Dagster modules: Dagster reads the config
and resource annotations at decoration time.)
"""

import contextlib

import dagster as dg

from assets.embeddings import embeddings
from assets.partitions import one_run, shards
from assets.shard_metadata import write_generations
from corpusmill.config import Settings
from corpusmill.model import Model
from corpusmill.model.pool import ModelPool
from corpusmill.store import Store

# What the metadata says about the scorer itself: not a run's figure.
SCORER_IDENTITY = ("scorer", "reranker_id", "reranker_revision")


class RerankConfig(dg.Config):
    """Which queries to score, and how many candidates per query and shard. Unset:
    CORPUSMILL_QUERIES (a JSONL of {"id", "text"}; empty: the built-in set) and
    CORPUSMILL_RERANK_K."""

    queries: str | None = None
    rerank_k: int | None = None


@dg.asset(
    deps=[embeddings],
    partitions_def=shards,
    backfill_policy=one_run,
    group_name="corpus",
    kinds={"pytorch", "lancedb"},
)
def rerank_scores(
    context: dg.AssetExecutionContext,
    config: RerankConfig,
    store: dg.ResourceParam[Store],
    models: dg.ResourceParam[ModelPool],
    reranker: dg.ResourceParam[Model],
    settings: dg.ResourceParam[Settings],
) -> dg.MaterializeResult:
    """Scores of (query, chunk) pairs for each query's k nearest chunks in each shard, in
    every generation the run serves (candidates come from that generation's vectors and
    its model's query vectors). Pairs whose query text, chunk content and reranker are
    unchanged keep their score; re-materialising with nothing changed writes nothing."""
    from corpusmill.queries import load_queries
    from corpusmill.rerank import PairScorer
    from corpusmill.sync import RerankReport, sync_rerank_scores

    run = settings.with_overrides(config.model_dump())
    queries = load_queries(run.queries)
    scorers = {}
    # CORPUSMILL_EXECUTOR=ray with a cross-encoder: its pairs are scored on Ray actors
    # (corpusmill/scale/ray_rerank.py); candidates, reuse, ranks and the commit stay here.
    on_ray = settings.executor == "ray" and reranker.configured
    remote = None

    def sync(target, _synced):
        scorer = scorers[target.generation.gen_id] = PairScorer(target.model, reranker, remote)
        if not scorer.cross and target.configured:
            context.log.info(
                "no cross-encoder configured (CORPUSMILL_RERANKER): scoring pairs with the "
                f"bi-encoder {scorer.model_id}"
            )
        return sync_rerank_scores(
            target.store, queries, context.partition_keys, scorer, k=run.rerank_k
        )

    with contextlib.ExitStack() as stack:
        if on_ray:
            from corpusmill.scale.cluster import ray_cluster
            from corpusmill.scale.ray_rerank import RayPairScores

            stack.enter_context(ray_cluster(settings.ray_address))
            remote = stack.enter_context(RayPairScores(reranker.spec, settings.ray_workers))
        report, meta = write_generations(
            context,
            store,
            models,
            settings,
            "rerank_scores",
            sync,
            RerankReport,
            not_run_level=SCORER_IDENTITY,
        )
    if remote is not None:
        meta.update(
            executor="ray",
            workers=settings.ray_workers,
            work_units=remote.units,
            worker_processes=len(remote.worker_pids),  # > workers: Ray restarted an actor
        )
    scorer = scorers[meta["generation"]]
    meta.update(scorer.model.lineage())
    meta["query_set"] = run.queries or "built-in (Python docs)"
    return dg.MaterializeResult(metadata=meta)
