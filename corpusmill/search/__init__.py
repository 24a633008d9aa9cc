"""Querying the embeddings table: vector, full-text, hybrid and reranked search."""

from corpusmill.search.hit import Hit
from corpusmill.search.searcher import MODES, Searcher

__all__ = ["MODES", "Hit", "Searcher"]
