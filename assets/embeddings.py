"""embeddings: chunks -> vectors in LanceDB, through the resident model resource."""

import contextlib

import dagster as dg

from assets.corpus import chunked_documents
from assets.partitions import one_run, shards
from assets.shard_metadata import quarantine_sample, run_level, write_generations
from corpusmill.config import Settings
from corpusmill.engine.progress import DEFAULT_EVERY_S, ProgressMeter, log_progress
from corpusmill.engine.telemetry import GpuSampler
from corpusmill.model import Model
from corpusmill.model.pool import ModelPool
from corpusmill.store import Store
from corpusmill.store.upkeep import index_for_search


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
    models: dg.ResourceParam[ModelPool],
    settings: dg.ResourceParam[Settings],
) -> dg.MaterializeResult:
    """One vector per chunk, in the configured model's generation: a new model builds its
    own tables beside the live ones, shard by shard, while search answers from the live
    generation (kept in sync in the same run, with its own model). Chunks whose content is
    already embedded in a generation are reused, not recomputed. With
    CORPUSMILL_EXECUTOR=ray the models run on a pool of Ray actors instead of in-process."""
    if settings.executor == "ray":
        return _embeddings_on_ray(context, store, embedder, models, settings)
    from corpusmill.sync import EmbeddingsReport, record_quarantine, sync_embeddings

    stats = []

    meter = ProgressMeter(log_progress(context.log), every_s=config.progress_every_s)
    gpu = GpuSampler()

    def sync(target, _synced):
        def embed(items, sink):
            progress = meter if target.configured else None
            run_stats = target.model.embed_stream(items, sink, progress=progress)
            if target.configured:
                stats.append(run_stats)

        with gpu if target.configured else contextlib.nullcontext():
            report = sync_embeddings(
                target.store,
                embed,
                target.model.card,
                context.partition_keys,
                tokenizer_id=target.model.tokenizer_id,
                progress=meter if target.configured else None,
            )
        # Chunks the engine could not embed (an input too large for the device even
        # alone) are quarantined at this generation's embed stage; retried next run.
        stage = target.store.stage("embed")
        record_quarantine(target.store, stage, report.failed, None, context.partition_keys)
        index_for_search(target.store)
        return report

    report, meta = write_generations(
        context, store, models, settings, "embeddings", sync, EmbeddingsReport, per_shard=_embedded
    )
    meta["quarantine_sample"] = quarantine_sample(context, report.failed)
    meta.update(embedder.lineage())
    # Throughput only when something was embedded: a zero would plot as a crash.
    if stats and stats[0].items:
        meta.update(run_level(stats[0].as_metadata()))
        meta.update(run_level(gpu.summary()))
    return dg.MaterializeResult(metadata=meta)


def _embedded(report) -> dict[str, dict[str, int]]:
    """Beside each shard's rows read back from the table: the chunks this run embedded."""
    return {"chunks_embedded": report.embedded_by_partition}


def _embeddings_on_ray(context, store, embedder, models, settings) -> dg.MaterializeResult:
    """The Ray path: this process plans and commits; `ray_workers` actors read, embed and
    write, one pool per generation the run serves (each with that generation's model).
    The run key is the Dagster run, the generation and its shards, so a retried commit of
    this run is skipped. Reports as the local path does (per-shard observations, `run_`
    figures), plus the workers, their tokens/s and the model loads (one per worker that
    embedded)."""
    from corpusmill.ids import content_hash
    from corpusmill.scale.cluster import ray_cluster
    from corpusmill.scale.ray_embed import sync_embeddings_on_ray
    from corpusmill.sync import EmbeddingsReport, record_quarantine

    # The driver reads the card and tokenizer only: the weights load in the workers.
    worker_stats = []

    def sync(target, _synced):
        gen_id = target.generation.gen_id
        run_key = f"{context.run_id}:{gen_id}:{content_hash(*sorted(context.partition_keys))}"
        report, stats = sync_embeddings_on_ray(
            target.store,
            target.model.spec,
            target.model.card,
            context.partition_keys,
            run_key=run_key,
            workers=settings.ray_workers,
            tokenizer_id=target.model.tokenizer_id,
        )
        if target.configured:
            worker_stats.append(stats)
        stage = target.store.stage("embed")
        record_quarantine(target.store, stage, report.failed, None, context.partition_keys)
        index_for_search(target.store)
        return report

    with ray_cluster(settings.ray_address):
        report, meta = write_generations(
            context,
            store,
            models,
            settings,
            "embeddings",
            sync,
            EmbeddingsReport,
            per_shard=_embedded,
        )
    meta["quarantine_sample"] = quarantine_sample(context, report.failed)
    meta.update(embedder.lineage())
    if not worker_stats:  # the configured generation was left to the run building it
        return dg.MaterializeResult(metadata=meta)
    (stats,) = worker_stats
    if stats.devices:  # the workers' device and dtype, not this driver's
        meta["device"] = ",".join(sorted({d.split("/")[0] for d in stats.devices}))
        meta["dtype"] = ",".join(sorted({d.split("/")[1] for d in stats.devices}))
    meta.update(run_level(stats.as_metadata()))
    return dg.MaterializeResult(metadata=meta)
