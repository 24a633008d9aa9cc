"""What the service answers from: one object to ask, per request, for the model and the table.

    generation = resident.current()      # once per request, at its start
    generation.batcher                   # the query model's micro-batcher (engine)
    generation.pinned()                  # a Searcher fixed on the table's latest version
    generation.scorer()                  # the configured reranker, or the bi-encoder

A request holds its `Generation` to the end, so every part of one answer (the query
vector, the table it searches, the rerank model) comes from the same models. Today there
is one generation for the life of the process; following a switch of the live generation
(issue 23) is `current()` noticing it and handing out a new `Generation`, nothing in the
routes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from app.inputs import InputCheck
from corpusmill.engine.microbatch import MicroBatcher
from corpusmill.errors import ConfigError, StoreError
from corpusmill.model import Model
from corpusmill.rerank import PairScorer
from corpusmill.search import Searcher


class Unavailable(Exception):
    """The store has no embeddings table yet: the service is up, the store is not (503)."""


@dataclass
class Generation:
    searcher: Searcher  # over the table this generation's model wrote
    batcher: MicroBatcher  # in front of the query model's engine
    inputs: InputCheck  # the query model's tokenizer, for /v1/embeddings
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def embedder(self) -> Model:
        return self.searcher.embedder

    @property
    def reranker(self) -> Model | None:
        return self.searcher.reranker

    @property
    def model_id(self) -> str:
        return self.embedder.card.model_id

    def pinned(self) -> Searcher:
        try:
            return self.searcher.pinned()
        except (ConfigError, StoreError) as exc:
            raise Unavailable(str(exc)) from exc

    def scorer(self) -> PairScorer:
        """A fresh scorer per request (it keeps the stats of its calls: the request's usage)."""
        return PairScorer(self.embedder, self.reranker)

    def table_version(self) -> int | None:
        table = self.searcher.store.open("embeddings")
        return None if table is None else int(table.version)


class Resident:
    """The service's models, loaded once, and the store they answer over."""

    def __init__(
        self,
        searcher: Searcher,
        *,
        max_wait_s: float,
        max_batch: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        batcher = searcher.embedder.micro_batcher(
            max_wait_s=max_wait_s, max_batch=max_batch, on_batch=on_batch
        )
        inputs = InputCheck(searcher.embedder)
        inputs.specials()  # now, in one thread, not racing on the first requests
        self._current = Generation(searcher, batcher, inputs)

    def current(self) -> Generation:
        return self._current

    def close(self) -> None:
        self._current.batcher.close()
