"""SQL filter strings for internal values (ids, shard keys, stage names).

Built with LanceDB's expression builder, which quotes values and column names
(`partition` is a SQL keyword): no value is ever formatted into SQL by hand. User input
(search filters) goes through `corpusmill.search.filters`, as expression objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

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


def range_filter(column: str, low: str, high: str) -> str:
    """`low <= column < high` for internal hex keys; "" leaves that end open."""
    from lancedb.expr import col, lit

    parts = []
    if low:
        parts.append((col(column) >= lit(low)).to_sql())
    if high:
        parts.append((col(column) < lit(high)).to_sql())
    return all_of(*parts) or "true"
