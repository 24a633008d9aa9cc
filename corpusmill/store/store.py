"""The LanceDB store: open, create and migrate tables, read them, and write them atomically.

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
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa

from corpusmill.errors import StoreError, store_error
from corpusmill.model.card import ModelCard
from corpusmill.store.filters import groups_of, in_filter
from corpusmill.store.lock import file_lock
from corpusmill.store.schemas import check_card, embeddings_schema, table_card


class CommitHook:
    """A test seam: `after(table_name)` runs after every commit `replace_rows` makes, so
    the adversarial suite can stop a run at each commit boundary (raise, or kill the
    process). Production code never sets it."""

    after: Callable[[str], None] | None = None


class Store:
    """One LanceDB database. Cheap to construct; opens tables lazily."""

    def __init__(self, uri: str) -> None:
        import lancedb

        self.uri = uri
        if "://" not in uri:
            try:
                Path(uri).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise (store_error(exc, uri) or exc) from exc
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

    def check_model(self, card: ModelCard) -> None:
        """Refuse `card` if an embeddings table exists and another model wrote it. Every
        asset that writes calls this before its first write, so a refused model swap
        leaves documents and chunks as they were, not only the embeddings."""
        stored = self.embeddings_card()
        if stored is not None:
            check_card(stored, card)

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
                _committed(table)
                return {"inserted": 0, "updated": 0, "deleted": before - table.count_rows()}
            return {"inserted": 0, "updated": 0, "deleted": 0}
        rows = rows.select(table.schema.names).cast(table.schema.remove_metadata())
        merge = table.merge_insert(key).when_matched_update_all().when_not_matched_insert_all()
        if delete_where and delete_where != "false":
            merge = merge.when_not_matched_by_source_delete(delete_where)
        result = merge.execute(rows)
        _committed(table)
        return {
            "inserted": result.num_inserted_rows,
            "updated": result.num_updated_rows,
            "deleted": result.num_deleted_rows,
        }

    def write_lock(self, name: str = "store"):
        """Serialise writers of this store on this machine (a CLI ingest racing a sensor
        run, upkeep racing an ingest). Object-store URIs get no file lock: see
        docs/DESIGN.md for how their writers are kept apart."""
        if "://" in self.uri:
            return contextlib.nullcontext()
        if not os.access(self.uri, os.W_OK):  # fail before the run does any work
            raise StoreError(
                f"cannot write the store at {self.uri!r}: permission denied; make it "
                "writable or point CORPUSMILL_DB at a directory you can write"
            )
        return file_lock(self.uri, name)

    def check_complete(self) -> None:
        """Refuse to search a store whose first ingest stopped before any vector was
        committed: "no results" would be a lie."""
        if self.count("embeddings") == 0 and self.count("chunks") > 0:
            raise StoreError(
                f"the store at {self.uri!r} is incomplete: it holds chunks but no vectors "
                "(the last ingest failed or was stopped); rerun `corpusmill ingest`"
            )


def _committed(table) -> None:
    if CommitHook.after is not None:
        CommitHook.after(table.name)
