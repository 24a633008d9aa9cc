"""Score (query, passage) pairs: with a cross-encoder when one is configured, else with the
bi-encoder, and say which (`scorer`: "cross-encoder" or "bi-encoder").

Pairs go through the model's batch engine, so they are batched exactly like chunks: by
padded-token budget, longest first. The bi-encoder score is the cosine of the query and
passage vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypedDict

import numpy as np

from corpusmill.engine.stats import EngineStats
from corpusmill.model import Model

CROSS_ENCODER = "cross-encoder"
BI_ENCODER = "bi-encoder"


class ScorerIdentity(TypedDict):
    """Which model scored a pair: stored on every rerank row and in the run's metadata."""

    scorer: str
    reranker_id: str
    reranker_revision: str


class PairScorer:
    """One scorer for the whole run: the cross-encoder if `reranker` is configured, else the
    bi-encoder `embedder`. Keeps the engine stats of every call for the run's metadata."""

    def __init__(
        self,
        embedder: Model,
        reranker: Model | None = None,
        remote: Callable[[Sequence[tuple[str, str]]], tuple[np.ndarray, list[EngineStats]]]
        | None = None,
    ) -> None:
        """`remote`: scores cross-encoder pairs elsewhere (`scale.ray_rerank.RayPairScores`:
        on resident-model Ray actors) instead of with `reranker` in this process."""
        self.remote = remote
        self.embedder = embedder
        self.reranker = reranker
        self.cross = reranker is not None and reranker.configured
        self.model = reranker if self.cross and reranker is not None else embedder
        card = self.model.card
        self.scorer = CROSS_ENCODER if self.cross else BI_ENCODER
        self.model_id = card.model_id
        self.revision = card.revision
        self.stats: list[EngineStats] = []

    def identity(self) -> ScorerIdentity:
        return {
            "scorer": self.scorer,
            "reranker_id": self.model_id,
            "reranker_revision": self.revision,
        }

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors from the bi-encoder (through its engine)."""
        vectors, stats = self.embedder.encode(list(texts))
        self.stats.append(stats)
        return unit_rows(vectors)

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """One float per pair, in input order; NaN where the engine failed the pair."""
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        if self.cross and self.remote is not None:
            logits, remote_stats = self.remote(pairs)
            self.stats.extend(remote_stats)
            return logits
        if self.cross:
            logits, stats = self.model.score(list(pairs))
            self.stats.append(stats)
            return logits
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
        if not tokens:  # nothing scored: no throughput (a 0 would plot as a crash)
            return {}
        return {
            "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1) if seconds else 0.0,
            "padding_fraction": round(1 - tokens / padded, 4) if padded else 0.0,
            "batches": sum(s.batches for s in self.stats),
            "engine_seconds": round(seconds, 3),
        }


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)
