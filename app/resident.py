"""What the service answers from: one object to ask, per request, for the model and the table.

    serving = await run_in_threadpool(resident.current)   # once per request, at its start
    serving.batcher                   # the query model's micro-batcher (engine)
    serving.pinned()                  # a Searcher fixed on the live generation's table
    serving.scorer()                  # the configured reranker, or the bi-encoder

A request holds its `Serving` to the end, so every part of one answer (the query vector,
the table it searches, the rerank model) comes from the same models. `current()` pins the
live generation (a read of the registry and one manifest: call it from a worker thread),
so a promotion or a rollback is followed by the next request, with the new generation's
model: one micro-batcher per model, made on its first request, so a batch never mixes the
queries of two models. A store with no live generation yet still embeds (/v1/embeddings)
with the configured model; a search there is 503.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from app.inputs import InputCheck
from corpusmill.engine.microbatch import MicroBatcher, batch_stats
from corpusmill.errors import ConfigError, StoreError
from corpusmill.model import Model
from corpusmill.rerank import PairScorer
from corpusmill.search import Searcher


class Unavailable(Exception):
    """The store has no embeddings table yet: the service is up, the store is not (503)."""


@dataclass
class Serving:
    searcher: Searcher  # pinned on the live generation; the unpinned searcher without one
    batcher: MicroBatcher  # in front of the query model's engine
    inputs: InputCheck  # the query model's tokenizer, for /v1/embeddings
    unavailable: str = ""  # why there is no table to search ("" when pinned)
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

    @property
    def generation_id(self) -> str | None:
        gen = self.searcher.generation
        return gen.gen_id if gen is not None else None

    def pinned(self) -> Searcher:
        if self.unavailable:
            raise Unavailable(self.unavailable)
        return self.searcher

    def scorer(self) -> PairScorer:
        """A fresh scorer per request (it keeps the stats of its calls: the request's usage)."""
        return PairScorer(self.embedder, self.reranker)

    def table_version(self) -> int | None:
        return None if self.unavailable else int(self.searcher.table.version)


class Resident:
    """The service's models, each loaded once, and the store they answer over."""

    def __init__(
        self,
        searcher: Searcher,
        *,
        max_wait_s: float,
        max_batch: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.searcher = searcher
        self.max_wait_s, self.max_batch, self._on_batch = max_wait_s, max_batch, on_batch
        self._lock = threading.Lock()
        self._by_model: dict[int, tuple[Model, MicroBatcher, InputCheck]] = {}
        self._parts(searcher.embedder)  # the configured model's, now, not racing requests

    def current(self) -> Serving:
        """The live generation, pinned at its latest committed version, with its model's
        batcher (blocking: a registry read)."""
        try:
            view, why = self.searcher.pinned(), ""
        except (ConfigError, StoreError) as exc:
            view, why = self.searcher, str(exc)
        batcher, inputs = self._parts(view.embedder)
        return Serving(view, batcher, inputs, why)

    def _parts(self, model: Model) -> tuple[MicroBatcher, InputCheck]:
        with self._lock:
            if id(model) not in self._by_model:
                batcher = model.micro_batcher(
                    max_wait_s=self.max_wait_s, max_batch=self.max_batch, on_batch=self._on_batch
                )
                inputs = InputCheck(model)
                inputs.specials()
                self._by_model[id(model)] = (model, batcher, inputs)
            return self._by_model[id(model)][1:]

    def batchers(self) -> list[MicroBatcher]:
        with self._lock:
            return [b for _, b, _ in self._by_model.values()]

    def pending(self) -> int:
        """Queries waiting in every batcher."""
        return sum(b.pending for b in self.batchers())

    def stats(self) -> dict[str, float]:
        """The figures of every batcher together (`MicroBatcher.stats`)."""
        return batch_stats(self.batchers(), self.max_wait_s, self.max_batch)

    def table_version(self) -> int | None:
        return self.current().table_version()

    def close(self) -> None:
        for batcher in self.batchers():
            batcher.close()
