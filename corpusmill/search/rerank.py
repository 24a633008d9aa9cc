"""Query-time reranking: rescore a few dozen search hits against their query."""

from __future__ import annotations

import numpy as np

from corpusmill.model import Model
from corpusmill.rerank.scorer import BI_ENCODER, CROSS_ENCODER, unit_rows
from corpusmill.search.hit import Hit


def rerank_hits(
    query: str,
    hits: list[Hit],
    *,
    cross_encoder: Model | None = None,
    embedder: Model | None = None,
    stored: tuple[list[float], dict[str, list[float]]] | None = None,
) -> list[Hit]:
    """Hits rescored best first (ties by chunk id); a pair the model failed is dropped.

    With a `cross_encoder`, each (query, hit text) pair is scored by it. Otherwise the
    `embedder` scores by cosine; `stored` = (query vector, {chunk_id: stored vector}) lets
    it use the vectors the table already holds instead of encoding the passages again.
    """
    if not hits:
        return []
    if cross_encoder is not None:
        scores, _stats = cross_encoder.score([(query, h.text) for h in hits])
        scorer = CROSS_ENCODER
    else:
        if embedder is None:
            raise ValueError("rerank_hits needs a cross_encoder or an embedder")
        scorer = BI_ENCODER
        if stored is not None and all(h.chunk_id in stored[1] for h in hits):
            query_vector, vectors = stored
            passages = np.asarray([vectors[h.chunk_id] for h in hits], dtype=np.float32)
        else:
            query_vector = embedder.embed([query])[0]
            passages = embedder.embed([h.text for h in hits])
        query_unit = unit_rows(np.asarray([query_vector], dtype=np.float32))[0]
        scores = unit_rows(passages) @ query_unit
    scored = [
        h.rescored(float(s), scorer) for h, s in zip(hits, scores, strict=True) if not np.isnan(s)
    ]
    return sorted(scored, key=lambda h: (-h.score, h.chunk_id))
