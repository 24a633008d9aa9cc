"""Rerank scores: pair scoring with a cross-encoder or the bi-encoder, and the table of them."""

from corpusmill.rerank.scorer import BI_ENCODER, CROSS_ENCODER, PairScorer
from corpusmill.rerank.table import RerankReport, sync_rerank_scores

__all__ = ["BI_ENCODER", "CROSS_ENCODER", "PairScorer", "RerankReport", "sync_rerank_scores"]
