"""The LanceDB store: `Store` (every write goes through it), its table schemas, and the
filters its callers build."""

from corpusmill.store.fragments import CommitResult, Snapshot
from corpusmill.store.predicates import all_of, eq_filter, groups_of, in_filter
from corpusmill.store.schemas import (
    check_card,
    chunk_fields,
    chunks_schema,
    documents_schema,
    embeddings_schema,
    quarantine_schema,
    rerank_schema,
    rows_to_table,
    table_card,
)
from corpusmill.store.store import Store, StoreRef

__all__ = [
    "CommitResult",
    "Snapshot",
    "Store",
    "StoreRef",
    "all_of",
    "check_card",
    "chunk_fields",
    "chunks_schema",
    "documents_schema",
    "embeddings_schema",
    "eq_filter",
    "groups_of",
    "in_filter",
    "quarantine_schema",
    "rerank_schema",
    "rows_to_table",
    "table_card",
]
