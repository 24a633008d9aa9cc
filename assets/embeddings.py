"""embeddings: chunks -> vectors in LanceDB, through the resident model resource."""

import dataclasses

import dagster as dg

from assets.corpus import chunked_documents
from assets.partitions import one_run, shards
from assets.shard_metadata import run_level, write_shards
from corpusmill.config import Settings
from corpusmill.engine.progress import DEFAULT_EVERY_S, Progress, ProgressMeter
from corpusmill.engine.telemetry import GpuSampler
from corpusmill.model import Model
from corpusmill.store import Store

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
    group_name="corpus",
    kinds={"pytorch", "lancedb"},
)
def embeddings(
    context: dg.AssetExecutionContext,
    config: EmbeddingsConfig,
    store: dg.ResourceParam[Store],
    embedder: dg.ResourceParam[Model],
    settings: dg.ResourceParam[Settings],
) -> dg.MaterializeResult:
    """One vector per chunk. Chunks whose content is already embedded by this model are
    reused, not recomputed; the table refuses vectors from any other model. With
    CORPUSMILL_EXECUTOR=ray the model runs on a pool of Ray actors instead of in-process."""
    if settings.executor == "ray":
        return _embeddings_on_ray(context, store, embedder, settings)
    from corpusmill.sync import record_quarantine, sync_embeddings

    stats = []

    def report_progress(p: Progress) -> None:
        context.log.info(p.line(), extra={PROGRESS_EXTRA: dataclasses.asdict(p)})

    meter = ProgressMeter(report_progress, every_s=config.progress_every_s)

    def embed(items, sink):
        stats.append(embedder.embed_stream(items, sink, progress=meter))

    gpu = GpuSampler()

    def sync():
        with gpu:
            report = sync_embeddings(
                store,
                embed,
                embedder.card,
                context.partition_keys,
                tokenizer_id=embedder.tokenizer_id,
                progress=meter,
            )
        # Chunks the engine could not embed (an input too large for the device even
        # alone) are quarantined at stage "embed"; their documents are retried next run.
        record_quarantine(store, "embed", report.failed, None, context.partition_keys)
        return report

    _report, meta = write_shards(context, store, "embeddings", sync, per_shard=_embedded)
    meta.update(embedder.lineage())
    # Throughput only when something was embedded: a zero would plot as a crash.
    if stats and stats[0].items:
        meta.update(run_level(stats[0].as_metadata()))
        meta.update(run_level(gpu.summary()))
    return dg.MaterializeResult(metadata=meta)


def _embedded(report) -> dict[str, dict[str, int]]:
    """Beside each shard's rows read back from the table: the chunks this run embedded."""
    return {"chunks_embedded": report.embedded_by_partition}


def _embeddings_on_ray(context, store, embedder, settings) -> dg.MaterializeResult:
    """The Ray path: this process plans and commits; `ray_workers` actors read, embed and
    write. The run key is the Dagster run and its shards, so a retried commit of this run
    is skipped. Reports as the local path does (per-shard observations, `run_` figures),
    plus the workers, their tokens/s and the model loads (one per worker that embedded)."""
    from corpusmill.ids import content_hash
    from corpusmill.scale.cluster import ray_cluster
    from corpusmill.scale.ray_embed import sync_embeddings_on_ray
    from corpusmill.sync import record_quarantine

    # The driver reads the card and tokenizer only: the weights load in the workers.
    run_key = f"{context.run_id}:{content_hash(*sorted(context.partition_keys))}"
    worker_stats = []

    def sync():
        with ray_cluster(settings.ray_address):
            report, stats = sync_embeddings_on_ray(
                store,
                embedder.spec,
                embedder.card,
                context.partition_keys,
                run_key=run_key,
                workers=settings.ray_workers,
                tokenizer_id=embedder.tokenizer_id,
            )
        worker_stats.append(stats)
        record_quarantine(store, "embed", report.failed, None, context.partition_keys)
        return report

    _report, meta = write_shards(context, store, "embeddings", sync, per_shard=_embedded)
    meta.update(embedder.lineage())
    (stats,) = worker_stats
    if stats.devices:  # the workers' device and dtype, not this driver's
        meta["device"] = ",".join(sorted({d.split("/")[0] for d in stats.devices}))
        meta["dtype"] = ",".join(sorted({d.split("/")[1] for d in stats.devices}))
    meta.update(run_level(stats.as_metadata()))
    return dg.MaterializeResult(metadata=meta)
