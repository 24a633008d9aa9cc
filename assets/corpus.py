"""raw_corpus and chunked_documents: sources -> `documents` -> `chunks`.

(No `from __future__ import annotations` in Dagster modules: Dagster reads the config
and resource annotations at decoration time.)
"""

import dagster as dg

from assets.partitions import one_run, shards
from assets.shard_metadata import observe_shards, run_level
from corpusmill.chunking import TokenChunker
from corpusmill.config import Settings
from corpusmill.model import Model
from corpusmill.sources import RecordFields, parse_source
from corpusmill.store import Store


class CorpusConfig(dg.Config):
    """Which sources this run reads. Entries: `pydoc` (the Python docs that ship with
    CPython), a path, or `label=path`. Rows of sources not listed are left alone.
    Unset fields take the deployment's settings (CORPUSMILL_SOURCES, ...)."""

    sources: list[str] | None = None
    id_field: str = "_id"
    text_field: str = "text"
    title_field: str = "title"
    max_file_bytes: int | None = None


@dg.asset(
    partitions_def=shards,
    backfill_policy=one_run,
    group_name="corpus",
    kinds={"lancedb"},
)
def raw_corpus(
    context: dg.AssetExecutionContext,
    config: CorpusConfig,
    store: dg.ResourceParam[Store],
    embedder: dg.ResourceParam[Model],
    settings: dg.ResourceParam[Settings],
) -> dg.MaterializeResult:
    """Documents read from the configured sources, one row each, with a content hash.
    Unreadable files go to the `quarantine` table with their reason; the run goes on.
    A store whose vectors another model wrote is refused before anything is written."""
    from corpusmill.sync import sync_documents
    from corpusmill.sync.shards import shard_counts

    run = settings.with_overrides(config.model_dump())
    db = store
    with db.write_lock(context.partition_keys):
        db.check_model(embedder.card)
        report = sync_documents(
            db,
            context.partition_keys,
            [parse_source(s) for s in run.sources],
            fields=RecordFields(config.id_field, config.text_field, config.title_field),
            max_file_bytes=run.max_file_bytes,
        )
    for q in report.quarantine[:20]:
        context.log.warning(f"quarantined {q.uri}: {q.reason}")
    observe_shards(context, shard_counts(db, "documents", context.partition_keys))
    meta = run_level(report.as_metadata())
    meta["unavailable_sources"] = ", ".join(meta.pop("run_unavailable_sources")) or "none"
    meta["quarantine_sample"] = dg.MetadataValue.md(
        "\n".join(f"- `{q.uri}`: {q.reason}" for q in report.quarantine[:20]) or "none"
    )
    meta["sources"] = ", ".join(run.sources)
    meta["table_version"] = db.version("documents")
    meta["run_partitions"] = len(context.partition_keys)
    return dg.MaterializeResult(metadata=meta)


class ChunkConfig(dg.Config):
    """Chunk size and overlap in the embedder's tokens (special tokens not counted).
    Unset: CORPUSMILL_CHUNK_TOKENS / CORPUSMILL_CHUNK_OVERLAP (200 / 32)."""

    chunk_tokens: int | None = None
    chunk_overlap: int | None = None


@dg.asset(
    deps=[raw_corpus],
    partitions_def=shards,
    backfill_policy=one_run,
    group_name="corpus",
    kinds={"lancedb"},
)
def chunked_documents(
    context: dg.AssetExecutionContext,
    config: ChunkConfig,
    store: dg.ResourceParam[Store],
    embedder: dg.ResourceParam[Model],
    settings: dg.ResourceParam[Settings],
) -> dg.MaterializeResult:
    """Chunks cut with the embedder's own tokenizer, never longer than its sequence limit.
    Needs only the tokenizer: the model's weights are not loaded here."""
    from corpusmill.sync import sync_chunks
    from corpusmill.sync.shards import shard_counts

    model = embedder
    run = settings.with_overrides(config.model_dump())
    chunker = TokenChunker(
        model.tokenizer,
        run.chunk_tokens,
        run.chunk_overlap,
        model.max_seq_length,
        tokenizer_id=model.tokenizer_id,  # chunks keep their input ids for the embedder
    )
    db = store
    with db.write_lock(context.partition_keys):
        db.check_model(model.card)
        report = sync_chunks(db, chunker, context.partition_keys)
    if report.truncated:
        context.log.warning(f"{report.truncated} chunks exceed the model limit and were truncated")
    observe_shards(
        context, shard_counts(db, "chunks", context.partition_keys, sum_column="n_tokens")
    )
    meta = run_level(report.as_metadata())
    meta["chunker"] = meta.pop("run_chunker")
    meta["table_version"] = db.version("chunks")
    meta["run_partitions"] = len(context.partition_keys)
    return dg.MaterializeResult(metadata=meta)
