"""A search hit: what `corpusmill search --json`, the Python API and the service return."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

HIT_COLUMNS = ["chunk_id", "doc_id", "source", "uri", "partition", "position", "text"]


@dataclass
class Hit:
    text: str
    score: float
    doc_id: str
    chunk_id: str
    source: str
    uri: str
    partition: str
    position: int
    scorer: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def rescored(self, score: float, scorer: str) -> Hit:
        return replace(self, score=score, scorer=scorer)

    @classmethod
    def from_row(cls, row: dict, score: float, scorer: str) -> Hit:
        return cls(
            text=row["text"],
            score=score,
            doc_id=row["doc_id"],
            chunk_id=row["chunk_id"],
            source=row["source"],
            uri=row["uri"],
            partition=row["partition"],
            position=int(row["position"]),
            scorer=scorer,
        )
