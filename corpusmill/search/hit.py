"""A search hit: what `corpusmill search --json`, the Python API and the service return."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

HIT_COLUMNS = ["chunk_id", "doc_id", "source", "uri", "partition", "position", "text"]
# Where the chunk sits (issue 24): read when the table has them (a table from before gains
# them at its next write), None otherwise.
PLACE_COLUMNS = ["page_first", "page_last", "section"]


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
    # The physical pages the chunk spans, numbered from 1 as a viewer counts them; None
    # for formats without pages.
    page_first: int | None = None
    page_last: int | None = None
    # The headings in force where the chunk starts, outermost first; None for a document
    # without headings, empty before its first one.
    section: list[str] | None = field(default=None)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def rescored(self, score: float, scorer: str) -> Hit:
        return replace(self, score=score, scorer=scorer)

    def citation(self) -> str:
        """Where the hit is, for a person: "p. 12", "pp. 12-13", "§ Methods › Data", both,
        or "" when the document has neither pages nor headings."""
        parts = []
        if self.page_first is not None:
            last = self.page_last if self.page_last is not None else self.page_first
            pages = (
                f"p. {self.page_first}"
                if last == self.page_first
                else f"pp. {self.page_first}-{last}"
            )
            parts.append(pages)
        if self.section:
            parts.append("§ " + " › ".join(self.section))
        return ", ".join(parts)

    @classmethod
    def from_row(cls, row: dict, score: float, scorer: str) -> Hit:
        section = row.get("section")
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
            page_first=row.get("page_first"),
            page_last=row.get("page_last"),
            section=None if section is None else list(section),
        )
