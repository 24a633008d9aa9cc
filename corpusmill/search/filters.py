"""Exact-match search filters as LanceDB expression objects, never SQL text.

User input is a typed literal handed to `.where()` as an `Expr`. (Rendering it with
`Expr.to_sql()` is *not* safe in lancedb 0.40: a value containing a backslash before a
quote, e.g. `x\\') OR (1=1) --`, comes out as SQL that matches every row;
tests/unit/test_search_filters.py keeps both paths honest.)
"""

from __future__ import annotations

from corpusmill.errors import UsageError
from corpusmill.ids import ALL_PARTITIONS


def build_filter(
    doc_id: str | None = None, source: str | None = None, partition: str | None = None
):
    """An `Expr` (or None) for `.where()`: equality on each given column, ANDed."""
    from lancedb.expr import col, lit

    if partition is not None and partition not in ALL_PARTITIONS:
        raise UsageError(
            f"partition={partition!r} is not a shard key; use one of "
            f"{ALL_PARTITIONS[0]} .. {ALL_PARTITIONS[-1]}"
        )
    expr = None
    for column, value in (("doc_id", doc_id), ("source", source), ("partition", partition)):
        if value is None:
            continue
        term = col(column) == lit(str(value))
        expr = term if expr is None else expr & term
    return expr
