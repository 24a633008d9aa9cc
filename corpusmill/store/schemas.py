"""The tables' schemas, and the model card an embeddings table carries in its metadata.

Shared by every generation: `documents`, `quarantine`, and the registry `generations`.
Model-bound, one of each per generation (`MODEL_TABLES`): `chunks`, `embeddings`,
`rerank_scores`. A generation's tables take the same schema whatever its name, so a column
added here applies to every generation's table (`Store.ensure` adds it to older ones).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from corpusmill.errors import ModelMismatchError
from corpusmill.model.card import ModelCard

META_PREFIX = "corpusmill."

# Each table's row id, declared to Lance as its (unenforced) primary key. Lance then puts
# the keys a merge_insert inserted into its commit, and a concurrent merge_insert that
# inserted the same new key fails its commit and retries as an update: without the
# declaration both commits succeed and the row is there twice
# (tests/e2e/test_concurrency_store.py). Lance requires the key to be non-nullable.
PRIMARY_KEYS = {
    "documents": "doc_id",
    "chunks": "chunk_id",
    "embeddings": "chunk_id",
    "quarantine": "quarantine_id",
    "rerank_scores": "score_id",
    "generations": "gen_id",
}
# What depends on the model: one of each per generation (chunk boundaries follow the
# tokenizer, vectors the weights, rerank candidates the vectors). A generation's name for
# each is `Store.physical(name)`.
MODEL_TABLES = ("chunks", "embeddings", "rerank_scores")
PK_POSITION = "lance-schema:unenforced-primary-key:position"


def key_field(name: str) -> pa.Field:
    """A primary-key column as Lance wants it: not null, marked in the field metadata."""
    return pa.field(name, pa.string(), nullable=False, metadata={PK_POSITION: "1"})


def primary_key(schema: pa.Schema) -> str | None:
    """The column `schema` declares as its primary key, if any."""
    for f in schema:
        meta = f.metadata or {}
        if PK_POSITION.encode() in meta or b"lance-schema:unenforced-primary-key" in meta:
            return f.name
    return None


def documents_schema() -> pa.Schema:
    return pa.schema(
        [
            key_field("doc_id"),
            ("doc_key", pa.string()),
            ("source", pa.string()),
            ("uri", pa.string()),
            ("partition", pa.string()),
            ("title", pa.string()),
            ("text", pa.string()),
            ("content_hash", pa.string()),
            # Added by issue 24 (null in rows written before): the author from the file's
            # metadata ("" when it has none), the layout (`Structure.to_json`: where pages
            # and headings start; null for formats without one) that places each chunk,
            # and, for an object-store object, the signature (ETag, size, reader version)
            # that lets a rerun skip reading an unchanged object (null for files).
            ("author", pa.string()),
            ("structure", pa.string()),
            ("signature", pa.string()),
        ]
    )


def chunk_fields() -> list[pa.Field]:
    """What a chunk is: the columns `chunks` and `embeddings` share."""
    return [
        key_field("chunk_id"),
        pa.field("doc_id", pa.string()),
        pa.field("doc_key", pa.string()),
        pa.field("source", pa.string()),
        pa.field("uri", pa.string()),
        pa.field("partition", pa.string()),
        pa.field("position", pa.int32()),
        pa.field("text", pa.string()),
        pa.field("content_hash", pa.string()),
        pa.field("doc_hash", pa.string()),
        pa.field("n_tokens", pa.int32()),
        pa.field("chunker", pa.string()),
        # Where the chunk sits, so a hit can be cited (issue 24; null in rows written
        # before): the physical pages it spans, numbered from 1 as a viewer counts them
        # (null for formats without pages), and the headings in force where it starts,
        # outermost first (null for a document without headings; empty before the first).
        pa.field("page_first", pa.int32()),
        pa.field("page_last", pa.int32()),
        pa.field("section", pa.list_(pa.string())),
    ]


def chunks_schema() -> pa.Schema:
    """Chunk fields plus the engine's input ids, computed while chunking and reused at
    embedding time when `tokenizer` still matches the embedder's (null: tokenise again).
    About 2 bytes per token on disk (4 in memory), to save tokenising every chunk twice."""
    return pa.schema(
        chunk_fields()
        + [
            pa.field("input_ids", pa.list_(pa.int32())),
            pa.field("tokenizer", pa.string()),
        ]
    )


def embeddings_schema(card: ModelCard) -> pa.Schema:
    fields = chunk_fields() + [
        pa.field("vector", pa.list_(pa.float32(), card.dimension)),
        pa.field("model_id", pa.string()),
    ]
    meta = {f"{META_PREFIX}{k}": v for k, v in card.as_metadata().items()}
    return pa.schema(fields, metadata=meta)


def quarantine_schema() -> pa.Schema:
    return pa.schema(
        [
            key_field("quarantine_id"),
            ("doc_id", pa.string()),
            ("source", pa.string()),
            ("uri", pa.string()),
            ("partition", pa.string()),
            ("stage", pa.string()),
            ("reason", pa.string()),
            ("seen_at", pa.timestamp("us", tz="UTC")),
        ]
    )


def rerank_schema() -> pa.Schema:
    return pa.schema(
        [
            key_field("score_id"),
            ("query_id", pa.string()),
            ("query_hash", pa.string()),
            ("query_text", pa.string()),
            ("chunk_id", pa.string()),
            ("doc_id", pa.string()),
            ("partition", pa.string()),
            ("content_hash", pa.string()),
            ("scorer", pa.string()),
            ("reranker_id", pa.string()),
            ("reranker_revision", pa.string()),
            ("score", pa.float32()),
            ("rank", pa.int32()),
        ]
    )


def generations_schema() -> pa.Schema:
    """The registry: one row per generation, and the `@live` row that names the live one
    (`store.generations`). Dicts travel as JSON text."""
    return pa.schema(
        [
            key_field("gen_id"),
            ("model_id", pa.string()),
            ("card", pa.string()),  # JSON: every ModelCard field
            ("model_path", pa.string()),  # where this machine found the model; null: unknown
            ("suffix", pa.string()),  # "" : the plain table names
            ("state", pa.string()),
            ("chunker", pa.string()),
            ("precision", pa.string()),
            ("created", pa.timestamp("us", tz="UTC")),
            ("promoted", pa.timestamp("us", tz="UTC")),  # last time it became live
            ("checks", pa.string()),  # JSON: the last checks and their outcome
            ("gate", pa.string()),  # JSON: the last gate figures and verdict
            ("note", pa.string()),  # the last refusal, with its reason
            ("live", pa.string()),  # the @live row: the live generation
            ("previous", pa.string()),  # the @live row: the one it replaced (rollback)
            ("changed", pa.timestamp("us", tz="UTC")),
        ]
    )


def table_card(schema: pa.Schema) -> dict[str, str]:
    meta = schema.metadata or {}
    return {
        k.decode().removeprefix(META_PREFIX): v.decode()
        for k, v in meta.items()
        if k.decode().startswith(META_PREFIX)
    }


def check_card(stored: dict[str, str], card: ModelCard, table: str = "embeddings") -> None:
    """Refuse a model other than the one that wrote the table, even at the same dimension."""
    expected = card.as_metadata()
    diffs = [
        f"{k}: table={stored.get(k)!r} model={v!r}"
        for k, v in expected.items()
        if stored.get(k) != v
    ]
    if diffs:
        raise ModelMismatchError(
            f"the {table!r} table was written by another model ({'; '.join(diffs)}). "
            "Use the model that wrote it (CORPUSMILL_MODEL), or point CORPUSMILL_DB at a "
            "new directory and re-ingest."
        )


def rows_to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema.remove_metadata())
