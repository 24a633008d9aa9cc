"""embeddings: chunks -> vectors in LanceDB, through the resident model resource."""

import dagster as dg

from assets.corpus import chunked_documents
from assets.partitions import STORE_POOL, one_run, shards
from corpusmill.engine.telemetry import GpuSampler
from resources import EmbedderResource, LanceStoreResource


@dg.asset(
    deps=[chunked_documents],
    partitions_def=shards,
    backfill_policy=one_run,
    pool=STORE_POOL,
    group_name="corpus",
    kinds={"pytorch", "lancedb"},
)
def embeddings(
    context: dg.AssetExecutionContext, store: LanceStoreResource, embedder: EmbedderResource
) -> dg.MaterializeResult:
    """One vector per chunk. Chunks whose content is already embedded by this model are
    reused, not recomputed; the table refuses vectors from any other model."""
    from corpusmill.sync import record_quarantine, sync_embeddings

    model = embedder.model
    db = store.store()
    stats = []

    def embed(items, sink):
        stats.append(model.embed_stream(items, sink))

    with db.write_lock(context.partition_keys), GpuSampler() as gpu:
        report = sync_embeddings(
            db,
            embed,
            model.card,
            context.partition_keys,
            tokenizer_id=model.tokenizer_id,
        )
        # Chunks the engine could not embed (an input too large for the device even
        # alone) are quarantined at stage "embed"; their documents are retried next run.
        record_quarantine(db, "embed", report._failed, None, context.partition_keys)
    meta: dict = report.as_metadata()
    meta.update(model.lineage())
    if stats:
        meta.update(stats[0].as_metadata())
    else:
        meta.update({"tokens": 0, "tokens_per_s": 0.0, "padding_fraction": 0.0})
    meta.update(gpu.summary())
    meta["table_version"] = db.version("embeddings")
    meta["partitions"] = len(context.partition_keys)
    return dg.MaterializeResult(metadata=meta)
