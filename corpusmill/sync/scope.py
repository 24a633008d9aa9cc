"""What a sync step touches and tells: the partition and document filters, the commit group
size, and the base of every step's report."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from corpusmill.ids import doc_key
from corpusmill.store import in_filter

DOC_GROUP = 256  # documents per commit: a commit is atomic per document


def detail(default_factory: Any) -> Any:
    """A report field that lists items (quarantined files, counts per shard): read by the
    assets and the CLI, but not a metadata value of its own."""
    return field(default_factory=default_factory, metadata={"detail": True})


@dataclass
class Report:
    def as_metadata(self) -> dict[str, Any]:
        """The report's figures, without its detail fields."""
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.metadata.get("detail")}


def partition_filter(partitions: Sequence[str]) -> str:
    return in_filter("partition", partitions)


def docs_filter(doc_ids: Iterable[str]) -> str:
    """Names documents by their hex key: see `ids.doc_key` for why never by id."""
    return in_filter("doc_key", [doc_key(d) for d in doc_ids])
