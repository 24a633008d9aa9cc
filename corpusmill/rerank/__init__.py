"""Pair scoring: a cross-encoder when one is configured, else the bi-encoder (the table of
scores is synced by `corpusmill.sync.rerank_scores`)."""

from corpusmill.rerank.scorer import BI_ENCODER, CROSS_ENCODER, PairScorer

__all__ = ["BI_ENCODER", "CROSS_ENCODER", "PairScorer"]
