"""Table upkeep: compaction, old-version cleanup, and the search indexes (writes too, so
they live with the store).

Every corpusmill write is a small `merge_insert` commit, so a table accumulates small
fragments (slower scans) and old versions (disk that is never reclaimed). `upkeep`
folds the fragments together, drops versions older than a grace period, and refreshes
the indexes search relies on:

- a full-text (BM25) index on `embeddings.text`, built once, then extended with new rows;
- an IVF-SQ vector index (cosine) once `embeddings` has `ANN_MIN_ROWS` rows: below that a
  flat scan is exact and fast enough (docs/BENCHMARKS.md, "`make bench-ann`");
- scalar indexes on the filter columns (`doc_id`, `source`, `partition`).

No Dagster here. Callers hold `Store.write_lock()` (and, in Dagster, the
`corpusmill_store` pool), so upkeep never races a writer.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

from corpusmill.store.store import Store

TABLES = ("documents", "chunks", "embeddings", "quarantine", "rerank_scores")
SEARCH_TABLE = "embeddings"

# Below this a flat scan is exact and fast enough; from here on the index pays for itself
# (bench/ann.py, docs/BENCHMARKS.md "`make bench-ann`"; 384-d, 2 busy cores):
# flat p50 0.3 s at 100k rows and 2.0 s at 1M, IVF-SQ + refine 9-10 ms at recall@10
# 0.996-1.0, built in 23 s (100k) / 173 s (1M).
ANN_MIN_ROWS = 100_000
# Query-time settings used with the index: probe this many IVF lists, and re-rank
# `refine_factor * k` quantised candidates with the full vectors: +4 ms buys recall@10
# 0.968 -> 1.0 at 1M rows.
ANN_NPROBES = 32
ANN_REFINE_FACTOR: int | None = 10
# Scalar indexes for the search filters and for the write path's `doc_key IN (...)` deletes.
FILTER_COLUMNS = {"doc_id": "BTREE", "doc_key": "BTREE", "source": "BITMAP", "partition": "BITMAP"}


def ann_partitions(n_rows: int) -> int:
    """IVF lists: ~sqrt(n), the usual rule, so each list holds about sqrt(n) rows."""
    return max(1, int(math.sqrt(n_rows)))


def ann_index_config(n_rows: int):
    """IVF with int8 scalar quantisation. On 384-d vectors it builds ~10x faster than
    IVF-PQ on 2 cores (no PQ codebook training) and keeps recall@10 ~0.99 without a
    refine step, at 1 byte per dimension (bench/ann.py)."""
    from lancedb.index import IvfSq

    return IvfSq(distance_type="cosine", num_partitions=ann_partitions(n_rows))


def index_columns(table) -> dict[str, str]:
    """column -> index type of the indexes the table has (one column each here)."""
    return {idx.columns[0]: str(idx.index_type) for idx in table.list_indices() if idx.columns}


def has_fts_index(table, column: str = "text") -> bool:
    return index_columns(table).get(column, "").upper() in ("FTS", "INVERTED")


def has_vector_index(table, column: str = "vector") -> bool:
    return column in index_columns(table)


def ensure_fts_index(table, column: str = "text") -> bool:
    """Build the BM25 index if missing; True if it was built. Rows added later are still
    searched (LanceDB scans the unindexed part) until `upkeep` folds them in. Writers only
    (the embeddings step, upkeep): a reader never builds an index (`SEARCH_INDEX_MISSING`).
    Two writers of disjoint shards may both find it missing: Lance lets one CreateIndex
    commit and fails the other ("preempted"), which then finds the winner's index."""
    from lancedb.index import FTS

    if has_fts_index(table, column):
        return False
    try:
        table.create_index(column, config=FTS(with_position=False), replace=True)
    except (OSError, RuntimeError, ValueError):
        table.checkout_latest()
        if has_fts_index(table, column):
            return False
        raise
    return True


def index_for_search(store: Store) -> bool:
    """The indexes a query of `store`'s generation needs, built by a writer after it
    committed `embeddings` (every ingest, so a store from before this rule gains them on
    its next run). True if one was built. The ANN and scalar indexes are optional speed-ups
    that `upkeep` builds; the full-text index is required by `fts` and `hybrid` search."""
    table = store.open(SEARCH_TABLE)
    if table is None or table.count_rows() == 0:
        return False
    return ensure_fts_index(table)


# What a reader answers on a generation whose full-text index no writer has built yet.
SEARCH_INDEX_MISSING = (
    "has no full-text index yet (a search never builds one: it would write the store): "
    "run `corpusmill ingest` (any ingest builds it) or the `upkeep` job, or search with "
    "--mode vector"
)


@dataclass
class TableUpkeep:
    table: str
    rows: int = 0
    fragments_before: int = 0
    fragments_after: int = 0
    versions_before: int = 0
    versions_after: int = 0
    indexes_built: list[str] = field(default_factory=list)
    unindexed_rows_before: int = 0
    unindexed_rows_after: int = 0


@dataclass
class UpkeepReport:
    tables: list[TableUpkeep] = field(default_factory=list)
    ann_min_rows: int = ANN_MIN_ROWS

    def as_metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"ann_min_rows": self.ann_min_rows}
        for t in self.tables:
            for key in (
                "rows",
                "fragments_before",
                "fragments_after",
                "versions_before",
                "versions_after",
                "unindexed_rows_before",
                "unindexed_rows_after",
            ):
                meta[f"{t.table}.{key}"] = getattr(t, key)
            meta[f"{t.table}.indexes_built"] = ", ".join(t.indexes_built) or "none"
        return meta


def _fragments(table) -> int:
    return int(table.stats()["fragment_stats"]["num_fragments"])


def _unindexed(table) -> int:
    total = 0
    for idx in table.list_indices():
        stats = table.index_stats(idx.name)
        total += int(getattr(stats, "num_unindexed_rows", 0) or 0)
    return total


def upkeep_table(
    table,
    name: str,
    *,
    cleanup_older_than: dt.timedelta,
    ann_min_rows: int = ANN_MIN_ROWS,
    retrain_ann: bool = False,
) -> TableUpkeep:
    report = TableUpkeep(table=name, rows=table.count_rows())
    report.fragments_before = _fragments(table)
    report.versions_before = len(table.list_versions())
    report.unindexed_rows_before = _unindexed(table)
    if name == SEARCH_TABLE and report.rows:
        if ensure_fts_index(table):
            report.indexes_built.append("fts(text)")
        existing = index_columns(table)
        for column, kind in FILTER_COLUMNS.items():
            if column in table.schema.names and column not in existing:
                table.create_scalar_index(column, index_type=kind, replace=True)
                report.indexes_built.append(f"{kind.lower()}({column})")
        wants_ann = report.rows >= ann_min_rows
        if wants_ann and (retrain_ann or not has_vector_index(table)):
            config = ann_index_config(report.rows)
            table.create_index("vector", config=config, replace=True)
            report.indexes_built.append(f"ivf_sq(vector, partitions={config.num_partitions})")
    # Compacts fragments, folds unindexed rows into every index, and drops old versions.
    table.optimize(cleanup_older_than=cleanup_older_than)
    if report.unindexed_rows_before and _fragments(table) > 1:
        # Lance compacts only fragments the indexes cover alike: rows written after the
        # writer built the full-text index are compacted once the first pass indexed them.
        table.optimize(cleanup_older_than=cleanup_older_than)
    report.fragments_after = _fragments(table)
    report.versions_after = len(table.list_versions())
    report.unindexed_rows_after = _unindexed(table)
    return report


def upkeep(
    store: Store,
    *,
    cleanup_older_than: dt.timedelta = dt.timedelta(hours=1),
    ann_min_rows: int = ANN_MIN_ROWS,
    retrain_ann: bool = False,
    tables: tuple[str, ...] = TABLES,
) -> UpkeepReport:
    """Upkeep every table that exists, each generation's model-bound tables included. The
    caller holds the store's write lock."""
    from corpusmill.store.generations import TABLE, read_registry

    report = UpkeepReport(ann_min_rows=ann_min_rows)
    suffixes = sorted({g.suffix for g in read_registry(store).generations.values()} | {""})
    seen: set[str] = set()
    for suffix in suffixes:
        view = store.for_generation(suffix)
        for name in (*tables, TABLE):
            table = view.open(name)
            if table is None or view.physical(name) in seen:
                continue
            seen.add(view.physical(name))
            entry = upkeep_table(
                table,
                name,
                cleanup_older_than=cleanup_older_than,
                ann_min_rows=ann_min_rows,
                retrain_ann=retrain_ann,
            )
            entry.table = view.physical(name)
            report.tables.append(entry)
    return report
