"""Score (query, passage) pairs: with a cross-encoder when one is configured, else with
the resident bi-encoder, and say which (`scorer`: "cross-encoder" or "bi-encoder").

Two callers: `Searcher.search(rerank=True)` rescoring a few dozen hits, and
`sync_rerank_scores` behind the `rerank_scores` asset, which scores every query against
its top-k chunks in each shard. Pairs go through the model resource's `BatchEngine`, so
they are batched exactly like chunks: by padded-token budget, longest first.

The bi-encoder score is the cosine of the query vector and the passage vector; in the
asset the passage vectors are the ones the `embeddings` table already holds (the same
model wrote them, `check_card` makes sure), so only the queries are encoded.
No Dagster here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from corpusmill.ids import content_hash
from corpusmill.queries import Query
from corpusmill.store import (
    Store,
    check_card,
    eq_filter,
    groups_of,
    in_filter,
    rerank_schema,
    rows_to_table,
)

CROSS_ENCODER = "cross-encoder"
BI_ENCODER = "bi-encoder"


class PairScorer:
    """One scorer for the whole run: the cross-encoder if `reranker.configured`, else the
    bi-encoder `embedder`. Keeps the engine stats of every call for the run's metadata."""

    def __init__(self, embedder, reranker=None) -> None:
        self.embedder = embedder
        self.reranker = reranker
        self.cross = reranker is not None and bool(getattr(reranker, "configured", False))
        card = (reranker if self.cross else embedder).card
        self.scorer = CROSS_ENCODER if self.cross else BI_ENCODER
        self.model_id = card.model_id
        self.revision = card.revision
        self.stats: list = []

    def identity(self) -> dict[str, str]:
        return {
            "scorer": self.scorer,
            "reranker_id": self.model_id,
            "reranker_revision": self.revision,
        }

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors from the bi-encoder (through its engine)."""
        vectors, stats = self.embedder.engine.encode(list(texts))
        self.stats.append(stats)
        return _unit(vectors)

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """One float per pair, in input order; NaN where the engine failed the pair."""
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        if self.cross:
            logits, stats = self.reranker.engine.encode(list(pairs))
            self.stats.append(stats)
            return logits[:, 0] if logits.ndim == 2 else logits
        queries = sorted({q for q, _ in pairs})
        passages = sorted({p for _, p in pairs})
        vectors = self.embed(queries + passages)
        at = {t: i for i, t in enumerate(queries)}
        at_p = {t: len(queries) + i for i, t in enumerate(passages)}
        q = vectors[[at[a] for a, _ in pairs]]
        p = vectors[[at_p[b] for _, b in pairs]]
        return np.einsum("ij,ij->i", q, p).astype(np.float32)

    def engine_metadata(self) -> dict[str, Any]:
        tokens = sum(s.real_tokens for s in self.stats)
        seconds = sum(s.wall_seconds for s in self.stats)
        padded = sum(s.padded_tokens for s in self.stats)
        return {
            "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1) if seconds else 0.0,
            "padding_fraction": round(1 - tokens / padded, 4) if padded else 0.0,
            "batches": sum(s.batches for s in self.stats),
            "engine_seconds": round(seconds, 3),
        }


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


def rerank_hits(query: str, hits: list, reranker, embedder, stored=None) -> list:
    """Rescore search hits against `query`; best first, ties by chunk id. A failed pair
    is dropped. `stored` = (query vector, {chunk_id: stored vector}) lets the bi-encoder
    score without re-encoding passages the table already holds vectors for."""
    from corpusmill.search import Hit

    if not hits:
        return []
    scorer = PairScorer(embedder, reranker)
    if not scorer.cross and stored is not None and all(h.chunk_id in stored[1] for h in hits):
        query_vector, vectors = stored
        passages = _unit(np.asarray([vectors[h.chunk_id] for h in hits], dtype=np.float32))
        scores = passages @ _unit(np.asarray([query_vector], dtype=np.float32))[0]
    else:
        scores = scorer.score([(query, h.text) for h in hits])
    scored = [
        Hit(**{**h.as_dict(), "score": float(s), "scorer": scorer.scorer})
        for h, s in zip(hits, scores, strict=True)
        if not np.isnan(s)
    ]
    return sorted(scored, key=lambda h: (-h.score, h.chunk_id))


# -- the rerank_scores table ----------------------------------------------------------
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
    _engine: dict = field(default_factory=dict)

    def as_metadata(self) -> dict[str, Any]:
        meta = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        meta.update(self._engine)
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
    report._engine = scorer.engine_metadata()
    report.sync_seconds = round(time.perf_counter() - t0, 3)
    return report


def _candidates(store, partition, queries, query_vectors, scorer, have, k, report):
    """{query id: [row, ...]} with scores filled in (reused, computed, or scored now)."""
    columns = ["chunk_id", "doc_id", "content_hash", "vector"] + (["text"] if scorer.cross else [])
    chunks = store.scan("embeddings", columns, eq_filter("partition", partition))
    if query_vectors is None or chunks.num_rows == 0:
        return {}
    vectors = chunks["vector"].combine_chunks()
    matrix = _unit(vectors.values.to_numpy(zero_copy_only=False).reshape(len(vectors), -1))
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
            elif scorer.cross:
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


def score_table(store: Store, query_id: str | None = None) -> pa.Table:
    """The stored scores (optionally of one query), best first per query: for notebooks."""
    table = store.open("rerank_scores")
    if table is None:
        return rows_to_table([], rerank_schema())
    data = table.to_arrow()
    if query_id is not None:
        data = data.filter(pa.compute.equal(data["query_id"], query_id))
    return data.sort_by([("query_id", "ascending"), ("score", "descending")])
