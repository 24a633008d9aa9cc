"""Search the embeddings table: vector, full-text, hybrid, optionally reranked.

The Python API behind `corpusmill search`:

    from corpusmill.model import Model
    from corpusmill.search import Searcher
    hits = Searcher("./data/lancedb", embedder=Model()).search("catch an exception", k=5)

Scores: vector = cosine similarity, fts = BM25, hybrid = the vector and full-text top 100
fused (`fusion.py`: a convex combination of min-max normalised scores by default, reciprocal
rank fusion with `fusion="rrf"`), reranked = the scorer's raw score (cross-encoder logit, or
bi-encoder cosine); `Hit.scorer` says which. Filters (`doc_id`, `source`, `partition`) are
expression objects (`filters.build_filter`); a partition must be one of the 16 shard keys.
"""

from __future__ import annotations

import copy
from typing import Any

from corpusmill.errors import ModelMismatchError, StoreError, UsageError
from corpusmill.model import Model
from corpusmill.model.pool import ModelPool
from corpusmill.search.filters import build_filter
from corpusmill.search.fusion import CONVEX_ALPHA, DEFAULT_FUSION, FUSIONS, fuse
from corpusmill.search.hit import HIT_COLUMNS, PLACE_COLUMNS, Hit
from corpusmill.search.rerank import rerank_hits
from corpusmill.store import Store, check_card, table_card
from corpusmill.store.generations import Generation, RegistryCache
from corpusmill.store.upkeep import (
    ANN_NPROBES,
    ANN_REFINE_FACTOR,
    SEARCH_INDEX_MISSING,
    has_fts_index,
)

MODES = ("vector", "fts", "hybrid")
HYBRID_DEPTH = 100  # each list fused is this deep (the BEIR hybrid setting)


class Searcher:
    """Opens the store and answers from one generation: the live one, resolved again at
    each `pinned()` (each request of the service, each `search` call), or the one named by
    `generation`. Queries are embedded by that generation's model (`models`, a pool built
    around `embedder`, the configured model; checked against the table's card before the
    first vector query), so a query vector is never compared with another model's table.
    Reranks with `reranker` when one is configured, else with the generation's model.
    Without an embedder, the packaged default model."""

    def __init__(
        self,
        store: Store | str,
        embedder: Model | None = None,
        reranker: Model | None = None,
        storage_options: dict[str, str] | None = None,
        *,
        generation: str | None = None,
        models: ModelPool | None = None,
    ) -> None:
        self.store = store if isinstance(store, Store) else Store(store, storage_options)
        self.embedder = embedder or Model()
        self.reranker = reranker
        self.models = models or ModelPool(self.embedder)
        self.generation_id = generation  # None: the live generation, at each pin
        self.generation: Generation | None = None  # set on the views `pinned()` returns
        self._registries = RegistryCache()  # shared with the views
        self._last_query: tuple[str | None, list[float]] = (None, [])
        self._pinned = None  # set on the views `pinned()` returns
        self._complete: bool = False  # the store was checked for a half-done first ingest
        self._missing_model = ""  # why the pinned generation's own model was not found

    def pinned(self) -> Searcher:
        """A view of this searcher fixed on one generation (the live one, unless this
        searcher names another) at the latest committed version of its table: every list
        of one request (vector and full-text of a hybrid, the stored vectors of a rerank)
        then reads the same version, and a commit or a switch made since the last request
        is seen. Resolving is a read of the registry and one manifest; the models are
        shared, not copied (a model another generation needs is loaded once, here)."""
        registry = self._registries.read(self.store)
        gen = (
            registry.get(self.generation_id)
            if self.generation_id is not None
            else registry.live_generation
        )
        base = self.store.for_generation("")
        if gen is None:
            if base.open("documents") is not None:
                base.check_complete()
            raise StoreError(
                f"no embeddings table in {self.store.uri!r}: run `corpusmill ingest` (or "
                "`make demo`) first, or set CORPUSMILL_DB"
            )
        view = copy.copy(self)
        view.generation = gen
        view.store = gen.view(self.store)
        try:
            view.embedder = self.models.for_card(
                gen.card, gen.model_path, what=f"generation {gen.gen_id}"
            )
        except ModelMismatchError as exc:
            # Full-text search needs no model; a vector search is refused, with this why.
            view._missing_model = str(exc)
        view._last_query = (None, [])
        table = view.store.open("embeddings")
        if table is None:
            view.store.check_complete()
            raise StoreError(
                f"generation {gen.gen_id} of {self.store.uri!r} has no embeddings yet: run "
                "`corpusmill ingest` (or `corpusmill generations build`) first"
            )
        view._pinned = table
        return view

    @property
    def table(self):
        if self._pinned is not None:
            return self._pinned
        return self.pinned().table

    def embed_query(self, query: str) -> list[float]:
        if self._last_query[0] == query:  # hybrid + rerank ask for the same vector twice
            return self._last_query[1]
        vector = self.embed_queries([query])[0]
        self._last_query = (query, vector)
        return vector

    def embed_queries(self, queries: list[str]) -> list[list[float]]:
        """Query vectors, all in one call to the model (a batch of queries is one batch;
        `Model.embed_queries` says which forward runs it)."""
        if self.generation is None:
            return self.pinned().embed_queries(queries)
        self.check_embedder()
        return self.embedder.embed_queries(list(queries)).tolist()

    def check_embedder(self) -> None:
        """Refuse to search the table with vectors from a model other than its writer."""
        try:
            check_card(table_card(self.table.schema), self.embedder.card)
        except ModelMismatchError as exc:
            raise ModelMismatchError(f"{exc} {self._missing_model}".strip()) from None

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
        queries, the service's micro-batch, by this view's model: checked here against the
        table's model, as `embed_queries` checks its own); else it is embedded here when
        needed. On an unpinned searcher, one call is one pin."""
        if self.generation is None:
            return self.pinned().search(
                query,
                k,
                mode,
                rerank=rerank,
                candidates=candidates,
                doc_id=doc_id,
                source=source,
                partition=partition,
                fusion=fusion,
                vector=vector,
            )
        if mode not in MODES:
            raise UsageError(f"mode={mode!r} is not one of {MODES} (--mode)")
        if fusion not in FUSIONS:
            raise UsageError(f"fusion={fusion!r} is not one of {FUSIONS} (--fusion)")
        if not query.strip():
            raise UsageError("empty query")
        if k < 1:
            raise UsageError(f"k={k}: ask for at least 1 hit (--k)")
        if rerank and candidates < 1:
            raise UsageError(
                f"candidates={candidates}: rerank at least 1 hit (--candidates, "
                "CORPUSMILL_RERANK_K)"
            )
        if not self._complete:
            self.store.check_complete()
            self._complete = True
        if vector is not None:
            self.check_embedder()
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
            hits = self._rerank(query, hits, qvec)
        return hits[:k]

    def search_many(self, queries: list[str], k: int = 10, mode: str = "vector", **options):
        """`search` for each query, the query vectors embedded together in one pass."""
        if not queries:
            return []
        if self.generation is None:
            return self.pinned().search_many(queries, k, mode, **options)
        vectors: list[list[float] | None] = [None] * len(queries)
        if self.needs_vector(mode, options.get("rerank", False)):
            vectors = list(self.embed_queries(queries))
        return [
            self.search(q, k, mode, vector=v, **options)
            for q, v in zip(queries, vectors, strict=True)
        ]

    def needs_vector(self, mode: str, rerank: bool = False) -> bool:
        """fts needs no query vector, unless the bi-encoder reranks (it scores with it)."""
        cross = self.reranker is not None and self.reranker.configured
        return mode != "fts" or (rerank and not cross)

    def _rerank(self, query: str, hits: list[Hit], qvec=None) -> list[Hit]:
        if self.reranker is not None and self.reranker.configured:
            return rerank_hits(query, hits, cross_encoder=self.reranker)
        # Bi-encoder scoring: the passages' vectors are in the table already.
        vectors = self.stored_vectors([h.chunk_id for h in hits]) if hits else {}
        qvec = qvec if qvec is not None else self.embed_query(query)
        return rerank_hits(query, hits, embedder=self.embedder, stored=(qvec, vectors))

    def stored_vectors(self, chunk_ids: list[str]) -> dict[str, list[float]]:
        from lancedb.expr import col, lit

        where = col("chunk_id").isin([lit(c) for c in chunk_ids])
        rows = self.table.search().where(where).select(["chunk_id", "vector"]).limit(None)
        return {r["chunk_id"]: r["vector"] for r in rows.to_list()}

    def hit_columns(self) -> list[str]:
        """The columns a hit is made of: its location too, where the table has it."""
        names = set(self.table.schema.names)
        return HIT_COLUMNS + [c for c in PLACE_COLUMNS if c in names]

    def vector(self, query: str, k: int, where=None, qvec=None) -> list[Hit]:
        # nprobes/refine only matter once upkeep has built the ANN index; before that the
        # search is an exact flat scan.
        qvec = self.embed_query(query) if qvec is None else qvec
        q = self.table.search(qvec).distance_type("cosine").nprobes(ANN_NPROBES)
        if ANN_REFINE_FACTOR:
            q = q.refine_factor(ANN_REFINE_FACTOR)
        if where is not None:
            q = q.where(where, prefilter=True)
        rows = q.select(self.hit_columns() + ["_distance"]).limit(k).to_list()
        return [Hit.from_row(r, 1.0 - float(r["_distance"]), "vector") for r in rows]

    def fulltext(self, query: str, k: int, where=None) -> list[Hit]:
        self.check_fts_index()
        # The query string is a plain BM25 match query: no operators are parsed from it.
        q = self.table.search(query, query_type="fts", fts_columns="text")
        if where is not None:
            q = q.where(where, prefilter=True)
        rows = q.select(self.hit_columns() + ["_score"]).limit(k).to_list()
        return [Hit.from_row(r, float(r["_score"]), "fts") for r in rows]

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
        """Fuse the vector and full-text top `depth` (`fusion.fuse`; ties broken by chunk
        id, so the order is deterministic)."""
        self.check_fts_index()  # before the query is embedded
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
        return [by_id[c].rescored(score, "hybrid") for c, score in ranked]

    def check_fts_index(self) -> None:
        """Refuse a full-text query on a generation without the index, in one line. Search
        is read-only: the writer builds the index (`store.upkeep.index_for_search`); rows
        added after the build are still searched (LanceDB scans the unindexed part)."""
        if self.generation is None:
            return self.pinned().check_fts_index()
        if not has_fts_index(self.table):
            raise StoreError(
                f"generation {self.generation.gen_id} of {self.store.uri!r} " + SEARCH_INDEX_MISSING
            )
