"""Shared pieces of the sync steps: reports, grouping, the partition and document filters."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from corpusmill.ids import doc_key
from corpusmill.store import in_filter

DOC_GROUP = 256  # documents per commit: a commit is atomic per document


@dataclass
class Report:
    def as_metadata(self) -> dict:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}


def partition_filter(partitions: Sequence[str]) -> str:
    return in_filter("partition", partitions)


def docs_filter(doc_ids: Iterable[str]) -> str:
    """Names documents by their hex key: see `ids.doc_key` for why never by id."""
    return in_filter("doc_key", [doc_key(d) for d in doc_ids])
