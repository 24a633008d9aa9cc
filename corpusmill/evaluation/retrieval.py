"""Retrieval quality of a store on a labelled query set, through the project's own search.

Protocol (MTEB's, see ../shared/eval/README.md): test queries only (those in
`qrels/test.tsv`), raw query text, documents are title then text, the model's 256-token
window, exact search for the top 1,000. Chunks are what the store holds, so a document's
score is its best chunk's score.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence

from corpusmill.errors import ConfigError
from corpusmill.evaluation.beir import BeirSet
from corpusmill.evaluation.metrics import NDCG_K, RECALL_K, mean_metrics
from corpusmill.ids import parse_doc_id

RETRIEVE_DEPTH = 1000  # chunks per query: MTEB retrieves the top 1,000 documents
SOURCE_LABEL = "scifact"  # the `source` the eval corpus gets in the store
# Eval mode -> (search mode, fusion): `hybrid` is the default (convex) fusion, as served;
# `hybrid-rrf` the same two lists fused by reciprocal rank fusion.
SEARCH_OF = {
    "vector": ("vector", "convex"),
    "fts": ("fts", "convex"),
    "hybrid": ("hybrid", "convex"),
    "hybrid-rrf": ("hybrid", "rrf"),
}
MODES = tuple(SEARCH_OF)


def doc_run(hits: Iterable, source: str) -> dict[str, float]:
    """Chunk hits -> {corpus doc id: best chunk score}; hits of other sources are dropped.
    Store doc ids are `source#file#record` for a record (ids.record_id_for), the record
    being the BEIR `_id`, and `source#key` for a whole file (the key is the id then)."""
    run: dict[str, float] = {}
    for hit in hits:
        try:
            hit_source, key, record = parse_doc_id(hit.doc_id)
        except ValueError:
            continue
        if hit_source != source:
            continue
        doc = key if record is None else record
        if doc not in run or hit.score > run[doc]:
            run[doc] = float(hit.score)
    return run


def evaluate(
    searcher,
    labelled: BeirSet,
    modes: Sequence[str] = MODES,
    *,
    source: str = SOURCE_LABEL,
    depth: int = RETRIEVE_DEPTH,
) -> dict[str, dict[str, float]]:
    """{mode: {"ndcg@10", "recall@100", "seconds"}} for the labelled queries."""
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ConfigError(f"unknown modes {unknown}; choose from {', '.join(MODES)}")
    results: dict[str, dict[str, float]] = {}
    for mode in modes:
        t0 = time.perf_counter()
        search_mode, fusion = SEARCH_OF[mode]
        runs = {
            qid: doc_run(
                searcher.search(text, k=depth, mode=search_mode, fusion=fusion, source=source),
                source,
            )
            for qid, text in labelled.queries.items()
        }
        results[mode] = {**mean_metrics(runs, labelled.qrels), "seconds": time.perf_counter() - t0}
    return results


def format_line(mode: str, metrics: Mapping[str, float]) -> str:
    return f"{mode} nDCG@{NDCG_K}={metrics[f'ndcg@{NDCG_K}']:.4f} Recall@{RECALL_K}={metrics[f'recall@{RECALL_K}']:.4f}"
