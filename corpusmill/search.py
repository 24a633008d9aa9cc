"""Search the embeddings table: vector, full-text, hybrid (reciprocal rank fusion).

The Python API behind `corpusmill search`:

    from corpusmill.search import Searcher
    hits = Searcher("./data/lancedb").search("how do I catch an exception", k=5, mode="hybrid")

Filters (`doc_id`, `source`, `partition`) are LanceDB expression objects handed to
`.where()` as they are: user input is a typed literal and is never rendered into SQL.
(Rendering them with `Expr.to_sql()` is *not* safe in lancedb 0.40: a value containing
a backslash before a quote, e.g. `x\\') OR (1=1) --`, comes out as SQL that matches
every row; tests/unit/test_search_filters.py keeps both paths honest.) A partition must
be one of the 16 shard keys.

Scores: vector = cosine similarity, fts = BM25, hybrid = reciprocal rank fusion (k=60)
of the vector and full-text top 100, reranked = the scorer's raw score (cross-encoder
logit, or bi-encoder cosine); `Hit.scorer` says which.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from corpusmill.errors import ConfigError
from corpusmill.ids import ALL_PARTITIONS
from corpusmill.maintenance import ANN_NPROBES, ANN_REFINE_FACTOR, ensure_fts_index, has_fts_index
from corpusmill.store import Store, check_card, table_card

MODES = ("vector", "fts", "hybrid")
RRF_K = 60  # the constant of Cormack et al.; also LanceDB's and most engines' default
HYBRID_DEPTH = 100  # each list fused by RRF is this deep (the BEIR hybrid setting)
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


def build_filter(
    doc_id: str | None = None, source: str | None = None, partition: str | None = None
):
    """An `Expr` (or None) for `.where()`: equality on each given column, ANDed."""
    from lancedb.expr import col, lit

    if partition is not None and partition not in ALL_PARTITIONS:
        raise ConfigError(
            f"partition={partition!r} is not a shard key; use one of "
            f"{ALL_PARTITIONS[0]} .. {ALL_PARTITIONS[-1]}"
        )
    expr = None
    for column, value in (("doc_id", doc_id), ("source", source), ("partition", partition)):
        if value is None:
            continue
        term = col(column) == lit(str(value))
        expr = term if expr is None else expr & term
    return expr


def rrf_fuse(rankings: list[list[str]], k: int = RRF_K) -> dict[str, float]:
    """Reciprocal rank fusion: score(d) = sum over rankings of 1 / (k + rank(d))."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    return scores


class Searcher:
    """Opens the store and (lazily) the embedder that wrote it."""

    def __init__(self, db_uri: str, embedder=None, reranker=None) -> None:
        self.store = Store(db_uri)
        self._embedder = embedder  # an EmbedderResource (or anything with .embed and .card)
        self._reranker = reranker  # a CrossEncoderResource; unconfigured: the bi-encoder scores
        self._last_query: tuple[str | None, list[float]] = (None, [])

    @property
    def table(self):
        table = self.store.open("embeddings")
        if table is None:
            raise ConfigError(
                f"no embeddings table in {self.store.uri!r}: run `corpusmill ingest` (or "
                "`make demo`) first, or set CORPUSMILL_DB"
            )
        return table

    @property
    def embedder(self):
        if self._embedder is None:
            from resources.models import EmbedderResource

            self._embedder = EmbedderResource()
        return self._embedder

    @property
    def reranker(self):
        """The cross-encoder named by CORPUSMILL_RERANKER unless one was passed in."""
        if self._reranker is None:
            from resources.models import CrossEncoderResource

            self._reranker = CrossEncoderResource()
        return self._reranker

    def embed_query(self, query: str) -> list[float]:
        if self._last_query[0] == query:  # hybrid + rerank ask for the same vector twice
            return self._last_query[1]
        vector = self._embed_query(query)
        self._last_query = (query, vector)
        return vector

    def _embed_query(self, query: str) -> list[float]:
        check_card(table_card(self.table.schema), self.embedder.card)
        encoder = getattr(self.embedder, "encoder", None)
        if encoder is None:
            return self.embedder.embed([query])[0].tolist()
        # One query is one batch: run it in this thread. The engine's three threads and
        # queues pay off over thousands of texts but add ~50-100 ms to a single one.
        from corpusmill.engine.runner import collate

        batch = collate(encoder.tokenize([query]), encoder.pad_id)
        return encoder.forward(batch)[0].tolist()

    def search(
        self,
        query: str,
        k: int = 10,
        mode: str = "vector",
        *,
        rerank: bool = False,
        candidates: int = 50,
        doc_id: str | None = None,
        source: str | None = None,
        partition: str | None = None,
    ) -> list[Hit]:
        if mode not in MODES:
            raise ConfigError(f"mode={mode!r} is not one of {MODES}")
        if not query.strip():
            raise ConfigError("empty query")
        where = build_filter(doc_id, source, partition)
        depth = max(k, candidates if rerank else k)
        if mode == "vector":
            hits = self.vector(query, depth, where)
        elif mode == "fts":
            hits = self.fulltext(query, depth, where)
        else:
            hits = self.hybrid(query, depth, where)
        if rerank:
            from corpusmill.rerank import rerank_hits

            stored = None
            if hits and not getattr(self.reranker, "configured", False):
                # Bi-encoder scoring: the passages' vectors are in the table already.
                stored = (self.embed_query(query), self.stored_vectors([h.chunk_id for h in hits]))
            hits = rerank_hits(query, hits, self.reranker, self.embedder, stored=stored)
        return hits[:k]

    def stored_vectors(self, chunk_ids: list[str]) -> dict[str, list[float]]:
        from lancedb.expr import col, lit

        where = col("chunk_id").isin([lit(c) for c in chunk_ids])
        rows = self.table.search().where(where).select(["chunk_id", "vector"]).limit(None)
        return {r["chunk_id"]: r["vector"] for r in rows.to_list()}

    def vector(self, query: str, k: int, where=None) -> list[Hit]:
        # nprobes/refine only matter once upkeep has built the ANN index; before that the
        # search is an exact flat scan.
        q = self.table.search(self.embed_query(query)).distance_type("cosine").nprobes(ANN_NPROBES)
        if ANN_REFINE_FACTOR:
            q = q.refine_factor(ANN_REFINE_FACTOR)
        if where is not None:
            q = q.where(where, prefilter=True)
        rows = q.select(HIT_COLUMNS + ["_distance"]).limit(k).to_list()
        return [_hit(r, 1.0 - float(r["_distance"]), "vector") for r in rows]

    def fulltext(self, query: str, k: int, where=None) -> list[Hit]:
        self.ensure_fts_index()
        # The query string is a plain BM25 match query: no operators are parsed from it.
        q = self.table.search(query, query_type="fts", fts_columns="text")
        if where is not None:
            q = q.where(where, prefilter=True)
        rows = q.select(HIT_COLUMNS + ["_score"]).limit(k).to_list()
        return [_hit(r, float(r["_score"]), "fts") for r in rows]

    def hybrid(self, query: str, k: int, where=None, depth: int = HYBRID_DEPTH) -> list[Hit]:
        """Fuse the vector and full-text top `depth` by reciprocal rank fusion (ties broken
        by chunk id, so the order is deterministic)."""
        depth = max(depth, k)
        vec = self.vector(query, depth, where)
        fts = self.fulltext(query, depth, where)
        fused = rrf_fuse([[h.chunk_id for h in vec], [h.chunk_id for h in fts]])
        by_id = {h.chunk_id: h for h in fts + vec}
        ranked = sorted(fused, key=lambda c: (-fused[c], c))[:k]
        return [_with_score(by_id[c], fused[c], "hybrid") for c in ranked]

    def ensure_fts_index(self) -> None:
        """Build the full-text index on first use if upkeep has not yet. Building is a
        write, so it waits for the store's write lock (never racing an ingest) and checks
        again once it holds it. Rows added after the build are still searched (LanceDB
        scans the unindexed part) until upkeep folds them into the index."""
        if has_fts_index(self.table):
            return
        with self.store.write_lock():
            ensure_fts_index(self.table)


def _hit(row: dict, score: float, scorer: str) -> Hit:
    return Hit(
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


def _with_score(hit: Hit, score: float, scorer: str) -> Hit:
    return Hit(**{**hit.as_dict(), "score": score, "scorer": scorer})
