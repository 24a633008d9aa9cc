"""Counts per shard of what a table holds, so each partition can report its own figures.

A single-run backfill materialises many shards in one step, and Dagster copies that step's
metadata onto every shard's materialisation (dagster-io/dagster#18123): shard-07 would
show the whole run's 784 rows. The assets therefore record these counts per shard as
observations of that partition; this module computes them with one scan per table.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

from corpusmill.store import Store
from corpusmill.sync.scope import partition_filter


def shard_counts(
    store: Store,
    table: str,
    partitions: Sequence[str],
    *,
    sum_column: str | None = None,
) -> dict[str, dict[str, int]]:
    """partition -> {"rows", "documents"(, "<sum_column>_total")} for each of `partitions`
    (zeros for a shard with no rows): rows of `table`, distinct `doc_id`s, and the sum of
    `sum_column` when given (e.g. `n_tokens`)."""
    columns = ["partition", "doc_id"] + ([sum_column] if sum_column else [])
    data = store.scan(table, columns, partition_filter(partitions))
    rows: Counter[str] = Counter()
    docs: dict[str, set[str]] = defaultdict(set)
    sums: Counter[str] = Counter()
    if data.num_rows:
        parts = data["partition"].to_pylist()
        ids = data["doc_id"].to_pylist()
        values = data[sum_column].to_pylist() if sum_column else [0] * len(parts)
        for p, d, v in zip(parts, ids, values, strict=True):
            rows[p] += 1
            docs[p].add(d)
            sums[p] += int(v or 0)
    out: dict[str, dict[str, int]] = {}
    for p in partitions:
        counts = {"rows": rows[p], "documents": len(docs[p])}
        if sum_column:
            counts[f"{sum_column}_total"] = sums[p]
        out[p] = counts
    return out


def merge_counts(
    base: dict[str, dict[str, int]], name: str, per_shard: Mapping[str, int]
) -> dict[str, dict[str, int]]:
    """Add one more per-shard figure (e.g. chunks embedded this run) under `name`."""
    for p, counts in base.items():
        counts[name] = int(per_shard.get(p, 0))
    return base
