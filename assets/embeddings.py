"""embeddings: chunks -> vectors in LanceDB, through the resident model resource."""

import dataclasses

import dagster as dg

from assets.corpus import chunked_documents
from assets.partitions import STORE_POOL, one_run, shards
from assets.shard_metadata import observe_shards, run_level
from corpusmill.engine.progress import DEFAULT_EVERY_S, Progress, ProgressMeter
from corpusmill.engine.telemetry import GpuSampler
from resources import EmbedderResource, LanceStoreResource

# The key under which a progress log line carries its numbers (`extra=`), for loggers that
# show them otherwise (the CLI's progress bar).
PROGRESS_EXTRA = "corpusmill_progress"


class EmbeddingsConfig(dg.Config):
    """How often the run log hears how far embedding got (seconds between lines)."""

    progress_every_s: float = DEFAULT_EVERY_S


@dg.asset(
    deps=[chunked_documents],
    partitions_def=shards,
    backfill_policy=one_run,
    pool=STORE_POOL,
    group_name="corpus",
    kinds={"pytorch", "lancedb"},
)
def embeddings(
    context: dg.AssetExecutionContext,
    config: EmbeddingsConfig,
    store: LanceStoreResource,
    embedder: EmbedderResource,
) -> dg.MaterializeResult:
    """One vector per chunk. Chunks whose content is already embedded by this model are
    reused, not recomputed; the table refuses vectors from any other model."""
    from corpusmill.sync import record_quarantine, sync_embeddings
    from corpusmill.sync.shards import merge_counts, shard_counts

    model = embedder.model
    db = store.store()
    stats = []

    def report_progress(p: Progress) -> None:
        context.log.info(p.line(), extra={PROGRESS_EXTRA: dataclasses.asdict(p)})

    meter = ProgressMeter(report_progress, every_s=config.progress_every_s)

    def embed(items, sink):
        stats.append(model.embed_stream(items, sink, progress=meter))

    with db.write_lock(), GpuSampler() as gpu:
        report = sync_embeddings(
            db,
            embed,
            model.card,
            context.partition_keys,
            tokenizer_id=model.tokenizer_id,
            progress=meter,
        )
        # Chunks the engine could not embed (an input too large for the device even
        # alone) are quarantined at stage "embed"; their documents are retried next run.
        record_quarantine(db, "embed", report._failed, None, context.partition_keys)
    per_shard = shard_counts(db, "embeddings", context.partition_keys)
    observe_shards(
        context, merge_counts(per_shard, "chunks_embedded", report._embedded_by_partition)
    )
    meta: dict = run_level(report.as_metadata())
    meta.update(model.lineage())
    # Throughput only when something was embedded: a zero would plot as a crash.
    if stats and stats[0].items:
        meta.update(run_level(stats[0].as_metadata()))
        meta.update(run_level(gpu.summary()))
    meta["table_version"] = db.version("embeddings")
    meta["run_partitions"] = len(context.partition_keys)
    return dg.MaterializeResult(metadata=meta)
