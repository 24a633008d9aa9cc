"""raw_corpus and chunked_documents: sources -> `documents` -> `chunks`.

(No `from __future__ import annotations` in Dagster modules: Dagster reads the config
and resource annotations at decoration time.)
"""

import dagster as dg

from assets.partitions import one_run, shards
from assets.shard_metadata import quarantine_sample, write_generations, write_shards
from corpusmill.chunking import TokenChunker
from corpusmill.config import Settings
from corpusmill.engine.progress import log_progress
from corpusmill.model.pool import ModelPool
from corpusmill.sources import RecordFields, SetAside, parse_source
from corpusmill.store import Store


class SetAsideConfig(dg.Config):
    """A document the run must not read (`corpusmill.inbox.SetAside`): the inbox sensor
    sets aside the inputs that failed its runs; with a reason, it is quarantined."""

    doc_id: str
    content_hash: str
    uri: str
    reason: str = ""


class CorpusConfig(dg.Config):
    """Which sources this run reads. Entries: `pydoc` (the Python docs that ship with
    CPython), a path, an `s3://bucket/prefix`, or `label=path`. Rows of sources not listed
    are left alone.
    Unset fields take the deployment's settings (CORPUSMILL_SOURCES, ...)."""

    sources: list[str] | None = None
    id_field: str = "_id"
    text_field: str = "text"
    title_field: str = "title"
    max_file_bytes: int | None = None
    max_pages: int | None = None
    extract_timeout: float | None = None
    extract_memory_mb: int | None = None
    set_aside: list[SetAsideConfig] = []


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
    settings: dg.ResourceParam[Settings],
) -> dg.MaterializeResult:
    """Documents read from the configured sources, one row each, with a content hash.
    Unreadable files go to the `quarantine` table with their reason; the run goes on.
    Shared by every model generation: a model change reads nothing again."""
    from corpusmill.sync import sync_documents

    run = settings.with_overrides(config.model_dump())

    def sync():
        return sync_documents(
            store,
            context.partition_keys,
            [parse_source(s) for s in run.sources],
            run.read_options(RecordFields(config.id_field, config.text_field, config.title_field)),
            set_aside=[SetAside(**a.model_dump()) for a in config.set_aside],
        )

    report, meta = write_shards(
        context, store, "documents", sync, not_run_level=["unavailable_sources"]
    )
    meta["unavailable_sources"] = ", ".join(meta["unavailable_sources"]) or "none"
    meta["quarantine_sample"] = quarantine_sample(context, report.quarantine)
    meta["sources"] = ", ".join(run.sources)
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
    models: dg.ResourceParam[ModelPool],
    settings: dg.ResourceParam[Settings],
) -> dg.MaterializeResult:
    """Chunks cut with the embedder's own tokenizer, never longer than its sequence limit,
    into the configured model's generation (and the live one's, with its own tokenizer,
    while they differ). Needs only the tokenizers: no model's weights are loaded here."""
    from corpusmill.sync import ChunksReport, sync_chunks

    run = settings.with_overrides(config.model_dump())

    def sync(target, synced):
        chunker = TokenChunker(
            target.model.tokenizer,
            run.chunk_tokens,
            run.chunk_overlap,
            target.model.max_seq_length,
            tokenizer_id=target.model.tokenizer_id,  # chunks keep their ids for the embedder
        )
        # A generation whose model has the same tokenizer (a new revision, a fine-tune of
        # the same base) cuts the same chunks: copied, not tokenised again.
        donors = [
            t.store
            for t in synced
            if t.model.tokenizer_id == target.model.tokenizer_id
            and t.model.max_seq_length == target.model.max_seq_length
        ]
        return sync_chunks(
            target.store, chunker, context.partition_keys, donors, log_progress(context.log)
        )

    report, meta = write_generations(
        context,
        store,
        models,
        run,
        "chunks",
        sync,
        ChunksReport,
        sum_column="n_tokens",
        not_run_level=["chunker"],
    )
    if report.truncated:
        context.log.warning(f"{report.truncated} chunks exceed the model limit and were truncated")
    return dg.MaterializeResult(metadata=meta)
