"""The LanceDB store: table schemas, model lineage, scoped atomic writes, and a write lock.

Tables (one directory, any URI lancedb accepts):
    documents      one row per source document: the corpus as last read
    chunks         token chunks of those documents
    embeddings     chunks + vectors: the table search reads; locked to one model
    quarantine     files and records that could not be read, with the reason
    rerank_scores  (query, chunk, scorer) -> score

Every write is a `merge_insert` keyed on the row id whose "not matched by source" clause
deletes the rows of the documents being replaced, in one commit: a changed document's
old chunks leave in the same commit that adds its new ones, so no reader ever finds it
missing, and a rerun after a crash converges to exactly one row per id.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from corpusmill.engine.encoder import ModelCard
from corpusmill.errors import ModelMismatchError

META_PREFIX = "corpusmill."
_IN_LIST_CHUNK = 500  # ids per IN (...) clause, keeps filter expressions small


def in_filter(column: str, values: Iterable[str]) -> str:
    """`column IN (...)` built with LanceDB's expression builder, which quotes values and
    column names (`partition` is a SQL keyword): no value is ever formatted into SQL."""
    from lancedb.expr import col, lit

    values = [str(v) for v in values]
    if not values:
        return "false"
    if any("\\" in v for v in values):
        # lancedb's Expr.to_sql does not double a quote that follows a backslash; see ids.doc_key.
        raise ValueError(f"filter values on {column!r} may not contain a backslash")
    return col(column).isin([lit(v) for v in values]).to_sql()


def eq_filter(column: str, value: str) -> str:
    """`column = value` for internal constants (a stage name, a shard key)."""
    from lancedb.expr import col, lit

    if "\\" in str(value):
        raise ValueError(f"filter values on {column!r} may not contain a backslash")
    return (col(column) == lit(str(value))).to_sql()


def all_of(*filters: str) -> str:
    return " AND ".join(f"({f})" for f in filters if f)


def groups_of(values: Sequence, size: int = _IN_LIST_CHUNK) -> Iterator[Sequence]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


# -- schemas ------------------------------------------------------------------------
def documents_schema() -> pa.Schema:
    return pa.schema(
        [
            ("doc_id", pa.string()),
            ("doc_key", pa.string()),
            ("source", pa.string()),
            ("uri", pa.string()),
            ("partition", pa.string()),
            ("title", pa.string()),
            ("text", pa.string()),
            ("content_hash", pa.string()),
        ]
    )


def chunk_fields() -> list[pa.Field]:
    """What a chunk is: the columns `chunks` and `embeddings` share."""
    return [
        pa.field("chunk_id", pa.string()),
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
            ("quarantine_id", pa.string()),
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
            ("score_id", pa.string()),
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


class Store:
    """One LanceDB database. Cheap to construct; opens tables lazily."""

    def __init__(self, uri: str) -> None:
        import lancedb

        self.uri = uri
        if "://" not in uri:
            Path(uri).mkdir(parents=True, exist_ok=True)
        self.db = lancedb.connect(uri)

    # -- tables -------------------------------------------------------------------------
    def table_names(self) -> list[str]:
        return list(self.db.list_tables().tables)

    def open(self, name: str):
        """The table, or None if it was never written."""
        if name not in self.table_names():
            return None
        return self.db.open_table(name)

    def ensure(self, name: str, schema: pa.Schema):
        """The table, created with `schema` if new. A table written by an older corpusmill
        gains the columns it lacks, as nulls (one commit, no rows rewritten): every column
        added to a schema must therefore be nullable and mean "unknown" when null."""
        table = self.open(name)
        if table is None:
            return self.db.create_table(name, schema=schema, exist_ok=True)
        missing = [f for f in schema if f.name not in table.schema.names]
        if missing:
            table.add_columns(missing)
        return table

    def ensure_embeddings(self, card: ModelCard):
        table = self.ensure("embeddings", embeddings_schema(card))
        check_card(table_card(table.schema), card)
        return table

    def embeddings_card(self) -> dict[str, str] | None:
        table = self.open("embeddings")
        return None if table is None else table_card(table.schema)

    # -- reads --------------------------------------------------------------------------
    def scan(self, name: str, columns: Sequence[str], where: str | None = None) -> pa.Table:
        """All rows matching `where`, only `columns`; an empty table if none exist."""
        table = self.open(name)
        if table is None:
            return pa.table({c: pa.array([], pa.string()) for c in columns})
        query = table.search().select(list(columns))
        if where:
            query = query.where(where)
        return query.limit(None).to_arrow()

    def scan_in(
        self, name: str, columns: Sequence[str], column: str, values: Sequence[str]
    ) -> pa.Table:
        """Rows whose `column` is one of `values` (chunked into several IN lists)."""
        parts = [
            self.scan(name, columns, in_filter(column, part)) for part in groups_of(list(values))
        ]
        parts = [p for p in parts if p.num_rows]
        if not parts:
            return self.scan(name, columns, "false")
        return pa.concat_tables(parts)

    def count(self, name: str, where: str | None = None) -> int:
        table = self.open(name)
        return 0 if table is None else table.count_rows(where)

    def version(self, name: str) -> int:
        table = self.open(name)
        return 0 if table is None else int(table.version)

    # -- writes -------------------------------------------------------------------------
    def replace_rows(
        self, table, key: str, rows: pa.Table | None, delete_where: str | None
    ) -> dict[str, int]:
        """Upsert `rows` by `key` and delete the target rows matching `delete_where` that
        `rows` does not contain, in one commit."""
        if rows is None or rows.num_rows == 0:
            if delete_where and delete_where != "false":
                before = table.count_rows()
                table.delete(delete_where)
                return {"inserted": 0, "updated": 0, "deleted": before - table.count_rows()}
            return {"inserted": 0, "updated": 0, "deleted": 0}
        rows = rows.select(table.schema.names).cast(table.schema.remove_metadata())
        merge = table.merge_insert(key).when_matched_update_all().when_not_matched_insert_all()
        if delete_where and delete_where != "false":
            merge = merge.when_not_matched_by_source_delete(delete_where)
        result = merge.execute(rows)
        return {
            "inserted": result.num_inserted_rows,
            "updated": result.num_updated_rows,
            "deleted": result.num_deleted_rows,
        }

    @contextlib.contextmanager
    def write_lock(self, name: str = "store"):
        """Serialise writers on this machine. Dagster's `corpusmill_store` pool serialises
        runs across workers; this lock also covers a CLI ingest racing a sensor run.
        Object-store URIs get no file lock: run their writers through the pool."""
        if "://" in self.uri:
            yield
            return
        lock_dir = Path(self.uri) / ".locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        path = str((lock_dir / f"{name}.lock").resolve())
        # Re-entrant per thread: flock on a second descriptor of the same file blocks even
        # in the process that holds it, so a nested `write_lock()` (an asset holding it
        # calls Searcher, whose first full-text query builds the index) would deadlock.
        held = _held_locks.__dict__.setdefault("paths", set())
        if path in held:
            yield
            return
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held.add(path)
            yield
        finally:
            held.discard(path)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


_held_locks = threading.local()


def rows_to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema.remove_metadata())
