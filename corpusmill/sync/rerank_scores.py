"""The rerank_scores table: every query scored against its top-k chunks of each shard.

Behind the `rerank_scores` asset. Candidates are each query's k nearest chunks by exact
cosine over the vectors the `embeddings` table already holds (the same model wrote them,
`check_card` makes sure), so only the queries are encoded; a pair whose query text, chunk
content and reranker are unchanged keeps its stored score.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from corpusmill.ids import content_hash
from corpusmill.queries import Query
from corpusmill.rerank.scorer import PairScorer, unit_rows
from corpusmill.store import (
    Store,
    check_card,
    eq_filter,
    groups_of,
    in_filter,
    rerank_schema,
    rows_to_table,
)


def score_id(query: Query, chunk_id: str, reranker_id: str, reranker_revision: str) -> str:
    """Row key: query id and text hash, chunk id, reranker id and revision."""
    return content_hash("rerank", query.id, query.hash, chunk_id, reranker_id, reranker_revision)


@dataclass
class RerankReport:
    scorer: str = ""
    reranker_id: str = ""
    reranker_revision: str = ""
    queries: int = 0
    candidates_per_shard: int = 0
    pairs: int = 0
    pairs_scored: int = 0
    pairs_reused: int = 0
    pairs_failed: int = 0
    rows_written: int = 0
    rows_deleted: int = 0
    rows: int = 0
    sync_seconds: float = 0.0
    engine: dict = field(default_factory=dict)  # the scorer's engine figures

    def as_metadata(self) -> dict[str, Any]:
        meta = {k: v for k, v in asdict(self).items() if k != "engine"}
        meta.update(self.engine)
        return meta


_STORED = ["score_id", "content_hash", "score", "rank", "query_text", "doc_id"]


def _top_k(sims: np.ndarray, chunk_ids: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k most similar chunks; ties broken by chunk id (deterministic)."""
    order = np.lexsort((chunk_ids, -sims))
    return order[:k]


def sync_rerank_scores(
    store: Store,
    queries: Sequence[Query],
    partitions: Sequence[str],
    scorer: PairScorer,
    *,
    k: int = 50,
) -> RerankReport:
    """Make `rerank_scores` hold, for each shard in `partitions` and each query, the
    scores of the query's `k` nearest chunks *in that shard* (exact cosine, so the
    candidate set never depends on an ANN index or on which other shards share the run;
    the union over shards always contains the global top k).

    A pair whose query text, chunk content and reranker are unchanged keeps its stored
    score; only changed rows are written, and rows of candidates that left the top k,
    of removed queries, or of another reranker are deleted. A rerun with nothing
    changed commits nothing.
    """
    t0 = time.perf_counter()
    report = RerankReport(queries=len(queries), candidates_per_shard=k, **scorer.identity())
    card = store.embeddings_card()
    if card is not None:
        check_card(card, scorer.embedder.card)
    table = store.ensure("rerank_scores", rerank_schema())
    query_vectors = scorer.embed([q.text for q in queries]) if queries and card else None
    ident = scorer.identity()
    for partition in partitions:
        stored = store.scan("rerank_scores", _STORED, eq_filter("partition", partition))
        have = {r["score_id"]: r for r in stored.to_pylist()}
        want = _candidates(store, partition, queries, query_vectors, scorer, have, k, report)
        for rows in want.values():
            for rank, row in enumerate(sorted(rows, key=lambda r: (-r["score"], r["chunk_id"])), 1):
                row["rank"] = rank
        wanted = [{**r, **ident} for rows in want.values() for r in rows]
        changed = [r for r in wanted if _differs(r, have.get(r["score_id"]))]
        keep = {r["score_id"] for r in wanted}
        stale = sorted(sid for sid in have if sid not in keep)
        report.rows_written += len(changed)
        report.rows_deleted += len(stale)
        _commit(store, table, changed, stale)
    report.rows = store.count("rerank_scores", in_filter("partition", partitions))
    report.engine = scorer.engine_metadata()
    report.sync_seconds = round(time.perf_counter() - t0, 3)
    return report


def _candidates(store, partition, queries, query_vectors, scorer, have, k, report):
    """{query id: [row, ...]} with scores filled in (reused, computed, or scored now)."""
    columns = ["chunk_id", "doc_id", "content_hash", "vector"] + (["text"] if scorer.cross else [])
    chunks = store.scan("embeddings", columns, eq_filter("partition", partition))
    if query_vectors is None or chunks.num_rows == 0:
        return {}
    vectors = chunks["vector"].combine_chunks()
    matrix = unit_rows(vectors.values.to_numpy(zero_copy_only=False).reshape(len(vectors), -1))
    sims = matrix @ query_vectors.T  # (chunks, queries): cosine
    chunk_ids = np.asarray(chunks["chunk_id"].to_pylist())
    doc_ids = chunks["doc_id"].to_pylist()
    hashes = chunks["content_hash"].to_pylist()
    texts = chunks["text"].to_pylist() if scorer.cross else None
    want: dict[str, list[dict]] = {}
    pending: list[tuple[dict, tuple[str, str]]] = []
    for j, query in enumerate(queries):
        rows = want.setdefault(query.id, [])
        for i in _top_k(sims[:, j], chunk_ids, k):
            cid = str(chunk_ids[i])
            sid = score_id(query, cid, scorer.model_id, scorer.revision)
            row = {
                "score_id": sid,
                "query_id": query.id,
                "query_hash": query.hash,
                "query_text": query.text,
                "chunk_id": cid,
                "doc_id": doc_ids[i],
                "partition": partition,
                "content_hash": hashes[i],
                "score": None,
            }
            old = have.get(sid)
            if old is not None and old["content_hash"] == hashes[i]:
                row["score"] = old["score"]
                report.pairs_reused += 1
            elif texts is not None:  # read only for a cross-encoder
                pending.append((row, (query.text, texts[i])))
            else:
                row["score"] = float(sims[i, j])
                report.pairs_scored += 1
            rows.append(row)
    report.pairs += sum(len(r) for r in want.values())
    if pending:
        scores = scorer.score([pair for _, pair in pending])
        for (row, _), value in zip(pending, scores, strict=True):
            row["score"] = None if np.isnan(value) else float(value)
        report.pairs_scored += sum(1 for row, _ in pending if row["score"] is not None)
    failed = sum(1 for rows in want.values() for r in rows if r["score"] is None)
    report.pairs_failed += failed
    return {q: [r for r in rows if r["score"] is not None] for q, rows in want.items()}


def _differs(row: dict, old: dict | None) -> bool:
    if old is None:
        return True
    return (
        old["content_hash"] != row["content_hash"]
        or old["rank"] != row["rank"]
        or old["query_text"] != row["query_text"]
        or old["doc_id"] != row["doc_id"]
        or np.float32(old["score"]) != np.float32(row["score"])  # the column is float32
    )


def _commit(store: Store, table, changed: list[dict], stale: list[str]) -> None:
    """Upsert `changed` and delete `stale` (by hex score id) in as few commits as the
    filter size allows; nothing changed, no commit."""
    stale_groups = list(groups_of(stale)) or [[]]
    rows = rows_to_table(changed, rerank_schema()) if changed else None
    for n, group in enumerate(stale_groups):
        delete = in_filter("score_id", group) if group else None
        store.replace_rows(table, "score_id", rows if n == 0 else None, delete)
