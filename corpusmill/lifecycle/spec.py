"""The promotion gate's settings as one value (`Settings.gate()` makes it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GateSpec:
    data: str  # a BEIR folder (queries.jsonl, qrels/test.tsv, corpus.jsonl)
    source: str  # the source label its corpus was ingested under
    tolerance: float  # how far below the live generation's nDCG@10 the candidate may be
