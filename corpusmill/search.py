"""Search the embeddings table: vector, full-text, hybrid (fusion of the two).

The Python API behind `corpusmill search`:

    from corpusmill.search import Searcher
    hits = Searcher("./data/lancedb").search("how do I catch an exception", k=5, mode="hybrid")

Filters (`doc_id`, `source`, `partition`) are LanceDB expression objects handed to
`.where()` as they are: user input is a typed literal and is never rendered into SQL.
(Rendering them with `Expr.to_sql()` is *not* safe in lancedb 0.40: a value containing
a backslash before a quote, e.g. `x\\') OR (1=1) --`, comes out as SQL that matches
every row; tests/unit/test_search_filters.py keeps both paths honest.) A partition must
be one of the 16 shard keys.

Scores: vector = cosine similarity, fts = BM25, hybrid = the vector and full-text top 100
fused (corpusmill/fusion.py: convex combination of min-max scores by default, or
reciprocal rank fusion with `fusion="rrf"`), reranked = the scorer's raw score (cross-encoder
logit, or bi-encoder cosine); `Hit.scorer` says which.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from corpusmill.errors import ConfigError
from corpusmill.fusion import CONVEX_ALPHA, DEFAULT_FUSION, FUSIONS, RRF_K, fuse, rrf_fuse  # noqa: F401 (rrf_fuse re-exported)
from corpusmill.ids import ALL_PARTITIONS
from corpusmill.maintenance import ANN_NPROBES, ANN_REFINE_FACTOR, ensure_fts_index, has_fts_index
from corpusmill.store import Store, check_card, table_card

MODES = ("vector", "fts", "hybrid")
HYBRID_DEPTH = 100  # each list fused is this deep (the BEIR hybrid setting)
# Up to this many queries are one padded batch run in the caller's thread; the engine's
# three threads and queues pay off over thousands of texts but add ~50-100 ms to a few.
ONE_BATCH_QUERIES = 32
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


class Searcher:
    """Opens the store and (lazily) the embedder that wrote it."""

    def __init__(self, db_uri: str, embedder=None, reranker=None) -> None:
        self.store = Store(db_uri)
        self._embedder = embedder  # an EmbedderResource (or anything with .embed and .card)
        self._reranker = reranker  # a CrossEncoderResource; unconfigured: the bi-encoder scores
        self._last_query: tuple[str | None, list[float]] = (None, [])
        self._pinned = None  # set on the views `pinned()` returns

    def pinned(self) -> Searcher:
        """A view of this searcher fixed on the latest committed version of the table:
        every list of one request (vector and full-text of a hybrid, the stored vectors of
        a rerank) then reads the same version, and a commit made since the last request is
        seen. Opening is one manifest read; the model is shared, not copied."""
        view = copy.copy(self)
        view._pinned = None
        view._pinned = view.table
        return view

    @property
    def table(self):
        if self._pinned is not None:
            return self._pinned
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
        return self.embed_queries([query])[0].tolist()

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """Query vectors (float32 rows, in input order) from one pass of the embedder:
        up to ONE_BATCH_QUERIES as one batch in this thread, more through the engine."""
        check_card(table_card(self.table.schema), self.embedder.card)
        encoder = getattr(self.embedder, "encoder", None)
        if encoder is None or len(texts) > ONE_BATCH_QUERIES:
            return np.asarray(self.embedder.embed(list(texts)), dtype=np.float32)
        from corpusmill.engine.runner import collate

        batch = collate(encoder.tokenize(list(texts)), encoder.pad_id)
        return np.asarray(encoder.forward(batch), dtype=np.float32)

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
        fusion: str = DEFAULT_FUSION,
        vector: Any = None,
    ) -> list[Hit]:
        """`vector`: the query's vector if the caller embedded it already (a batch of
        queries, the service's micro-batch); else it is embedded here when needed."""
        if mode not in MODES:
            raise ConfigError(f"mode={mode!r} is not one of {MODES}")
        if fusion not in FUSIONS:
            raise ConfigError(f"fusion={fusion!r} is not one of {FUSIONS}")
        if not query.strip():
            raise ConfigError("empty query")
        where = build_filter(doc_id, source, partition)
        depth = max(k, candidates if rerank else k)
        qvec = None if vector is None else [float(x) for x in vector]
        if mode == "vector":
            hits = self.vector(query, depth, where, qvec=qvec)
        elif mode == "fts":
            hits = self.fulltext(query, depth, where)
        else:
            hits = self.hybrid(query, depth, where, fusion=fusion, qvec=qvec)
        if rerank:
            from corpusmill.rerank import rerank_hits

            stored = None
            if hits and not getattr(self.reranker, "configured", False):
                # Bi-encoder scoring: the passages' vectors are in the table already.
                qvec = qvec if qvec is not None else self.embed_query(query)
                stored = (qvec, self.stored_vectors([h.chunk_id for h in hits]))
            hits = rerank_hits(query, hits, self.reranker, self.embedder, stored=stored)
        return hits[:k]

    def search_many(self, queries: list[str], k: int = 10, mode: str = "vector", **options):
        """`search` for each query, the query vectors embedded together in one pass."""
        needs_vectors = mode != "fts" or (
            options.get("rerank") and not getattr(self.reranker, "configured", False)
        )
        if not queries:
            return []
        vectors = self.embed_queries(queries) if needs_vectors else [None] * len(queries)
        return [
            self.search(q, k, mode, vector=v, **options)
            for q, v in zip(queries, vectors, strict=True)
        ]

    def stored_vectors(self, chunk_ids: list[str]) -> dict[str, list[float]]:
        from lancedb.expr import col, lit

        where = col("chunk_id").isin([lit(c) for c in chunk_ids])
        rows = self.table.search().where(where).select(["chunk_id", "vector"]).limit(None)
        return {r["chunk_id"]: r["vector"] for r in rows.to_list()}

    def vector(self, query: str, k: int, where=None, qvec=None) -> list[Hit]:
        # nprobes/refine only matter once upkeep has built the ANN index; before that the
        # search is an exact flat scan.
        qvec = self.embed_query(query) if qvec is None else qvec
        q = self.table.search(qvec).distance_type("cosine").nprobes(ANN_NPROBES)
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

    def hybrid(
        self,
        query: str,
        k: int,
        where=None,
        depth: int = HYBRID_DEPTH,
        *,
        fusion: str = DEFAULT_FUSION,
        alpha: float = CONVEX_ALPHA,
        qvec=None,
    ) -> list[Hit]:
        """Fuse the vector and full-text top `depth` (corpusmill/fusion.py; ties broken by
        chunk id, so the order is deterministic)."""
        depth = max(depth, k)
        vec = self.vector(query, depth, where, qvec=qvec)
        fts = self.fulltext(query, depth, where)
        ranked = fuse(
            [(h.chunk_id, h.score) for h in vec],
            [(h.chunk_id, h.score) for h in fts],
            fusion,
            alpha=alpha,
            k=k,
        )
        by_id = {h.chunk_id: h for h in fts + vec}
        return [_with_score(by_id[c], score, "hybrid") for c, score in ranked]

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
