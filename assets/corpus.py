"""raw_corpus and chunked_documents: sources -> `documents` -> `chunks`.

(No `from __future__ import annotations` in Dagster modules: Dagster reads the config
and resource annotations at decoration time.)
"""

import dagster as dg

from assets.partitions import STORE_POOL, one_run, shards
from corpusmill.chunking import TokenChunker
from corpusmill.settings import Settings, parse_source
from corpusmill.sources import RecordFields
from resources import EmbedderResource, LanceStoreResource

_settings = Settings.from_env()


class CorpusConfig(dg.Config):
    """Which sources this run reads. Entries: `pydoc` (the Python docs that ship with
    CPython), a path, or `label=path`. Rows of sources not listed are left alone."""

    sources: list[str] = list(_settings.sources)
    id_field: str = "_id"
    text_field: str = "text"
    title_field: str = "title"
    max_file_bytes: int = _settings.max_file_bytes


@dg.asset(
    partitions_def=shards,
    backfill_policy=one_run,
    pool=STORE_POOL,
    group_name="corpus",
    kinds={"lancedb"},
)
def raw_corpus(
    context: dg.AssetExecutionContext, config: CorpusConfig, store: LanceStoreResource
) -> dg.MaterializeResult:
    """Documents read from the configured sources, one row each, with a content hash.
    Unreadable files go to the `quarantine` table with their reason; the run goes on."""
    from corpusmill.sync import sync_documents

    db = store.store()
    with db.write_lock():
        report = sync_documents(
            db,
            context.partition_keys,
            [parse_source(s) for s in config.sources],
            fields=RecordFields(config.id_field, config.text_field, config.title_field),
            max_file_bytes=config.max_file_bytes,
        )
    for q in report._quarantine[:20]:
        context.log.warning(f"quarantined {q.uri}: {q.reason}")
    meta = report.as_metadata()
    meta["unavailable_sources"] = ", ".join(meta["unavailable_sources"]) or "none"
    meta["quarantine_sample"] = dg.MetadataValue.md(
        "\n".join(f"- `{q.uri}`: {q.reason}" for q in report._quarantine[:20]) or "none"
    )
    meta["sources"] = ", ".join(config.sources)
    meta["table_version"] = db.version("documents")
    return dg.MaterializeResult(metadata=meta)


class ChunkConfig(dg.Config):
    """Chunk size and overlap in the embedder's tokens (special tokens not counted)."""

    chunk_tokens: int = _settings.chunk_tokens
    chunk_overlap: int = _settings.chunk_overlap


@dg.asset(
    deps=[raw_corpus],
    partitions_def=shards,
    backfill_policy=one_run,
    pool=STORE_POOL,
    group_name="corpus",
    kinds={"lancedb"},
)
def chunked_documents(
    context: dg.AssetExecutionContext,
    config: ChunkConfig,
    store: LanceStoreResource,
    embedder: EmbedderResource,
) -> dg.MaterializeResult:
    """Chunks cut with the embedder's own tokenizer, never longer than its sequence limit."""
    from corpusmill.sync import sync_chunks

    enc = embedder.encoder
    chunker = TokenChunker(
        enc.tokenizer,
        config.chunk_tokens,
        config.chunk_overlap,
        enc.max_seq_length,
        tokenizer_id=enc.tokenizer_id,  # chunks keep their input ids for the embedder
    )
    db = store.store()
    with db.write_lock():
        report = sync_chunks(db, chunker, context.partition_keys)
    if report.truncated:
        context.log.warning(f"{report.truncated} chunks exceed the model limit and were truncated")
    meta = report.as_metadata()
    meta["table_version"] = db.version("chunks")
    return dg.MaterializeResult(metadata=meta)
