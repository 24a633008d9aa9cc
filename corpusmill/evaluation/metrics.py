"""Retrieval metrics as pytrec_eval (trec_eval) computes them: nDCG@10 and Recall@100.

A run is a {doc: score} map ranked by score, ties broken by doc id descending; gains are
the qrels' relevance levels (binary for BEIR), discount log2(rank + 1), ideal DCG from the
qrels. One difference, on purpose: the mean is over every labelled query, and one with no
results counts 0 (trec_eval -c); plain pytrec_eval would drop it and look better.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from corpusmill.errors import ConfigError

NDCG_K = 10
RECALL_K = 100

Run = Mapping[str, float]  # doc id -> score, for one query
Qrel = Mapping[str, int]  # doc id -> relevance level, for one query


def trec_order(run: Run) -> list[str]:
    """Doc ids best first, as trec_eval ranks a run: score descending, then doc id
    descending (so results never depend on dict order)."""
    return [d for d, _ in sorted(run.items(), key=lambda kv: (float(kv[1]), kv[0]), reverse=True)]


def dcg(gains: Iterable[float]) -> float:
    return sum(g / math.log2(rank + 1) for rank, g in enumerate(gains, start=1))


def ndcg_at_k(run: Run, qrel: Qrel, k: int = NDCG_K) -> float:
    """nDCG@k (trec_eval's ndcg_cut): 0 for a query with nothing relevant."""
    ideal = dcg(sorted((max(r, 0) for r in qrel.values()), reverse=True)[:k])
    if ideal <= 0:
        return 0.0
    return dcg(max(qrel.get(d, 0), 0) for d in trec_order(run)[:k]) / ideal


def recall_at_k(run: Run, qrel: Qrel, k: int = RECALL_K) -> float:
    """Share of the relevant documents (relevance > 0) found in the top k."""
    relevant = {d for d, r in qrel.items() if r > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(trec_order(run)[:k])) / len(relevant)


def mean_metrics(runs: Mapping[str, Run], qrels: Mapping[str, Qrel]) -> dict[str, float]:
    """Mean nDCG@10 and Recall@100 over every query in `qrels` (missing runs count 0)."""
    if not qrels:
        raise ConfigError("no labelled queries to evaluate")
    n = len(qrels)
    ndcg = sum(ndcg_at_k(runs.get(q, {}), qrel) for q, qrel in qrels.items()) / n
    recall = sum(recall_at_k(runs.get(q, {}), qrel) for q, qrel in qrels.items()) / n
    return {f"ndcg@{NDCG_K}": ndcg, f"recall@{RECALL_K}": recall}
