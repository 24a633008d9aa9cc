"""`rerank_scores`' pairs scored on a Ray actor pool: one resident cross-encoder per actor.

The driver (`sync.rerank_scores`, unchanged) finds each query's candidates in each shard,
keeps every stored score whose query text, chunk content and reranker are unchanged, and
hands only the remaining pairs to its `PairScorer`; given a `RayPairScores` as its
`remote`, the scorer sends them here instead of to its own model. They go out in units of
`batch_pairs` pairs (`ScoreWorker.run`), at most two per actor at once (the embeddings
path's dispatcher, `ray_embed._dispatch`), and their scores come back in the pairs' order.
Ranks are computed by the driver, where all of a query's scores meet, and the rows are
committed as the in-process path commits them (`Store.replace_rows`): the same rows,
exactly once, and a reused pair is never sent. A killed actor is restarted and its units
retried (`max_restarts`, `max_task_retries`), as for embeddings.

The driver calls the scorer once per shard; the actors are started on the first call and
kept until `close` (the asset holds a `RayPairScores` for the whole run), so each loads its
cross-encoder once per run, not once per shard.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator, Sequence

import numpy as np

from corpusmill.engine.stats import EngineStats

BATCH_PAIRS = 256  # pairs per work unit at most

# (units as a stream, the workers' constructor kwargs) -> (unit, result), as results come.
# It may keep its workers between calls; a `close()` method, if it has one, ends them.
MapPairs = Callable[[Iterator[dict], dict], Generator[tuple[dict, dict], None, None]]


class ScoreWorker:
    """The actor: a resident cross-encoder built from its picklable spec (weights load on
    the first unit); scores a unit of (query, passage) pairs."""

    def __init__(self, spec, threads: int = 1) -> None:
        import torch

        from corpusmill.config import prepare_process
        from corpusmill.model import Model

        prepare_process()
        torch.set_num_threads(max(1, threads))
        self.model = Model(spec)

    def run(self, unit: dict) -> dict:
        scores, stats = self.model.score(list(zip(unit["queries"], unit["passages"], strict=True)))
        return {
            "scores": np.asarray(scores, dtype=np.float32),
            "stats": stats,
            "worker": os.getpid(),
        }


class RayPairScores:
    """Scores pairs on `workers` actors (`map_pairs`: default a Ray actor pool, started on
    the first call and kept until `close`; tests pass one that runs a worker in this
    process). Call it with the pairs; it returns one float per pair (NaN where the engine
    failed it) and the workers' engine statistics. Use it as a context manager."""

    def __init__(
        self,
        spec,
        workers: int = 2,
        *,
        batch_pairs: int = BATCH_PAIRS,
        gpu: bool | None = None,
        map_pairs: MapPairs | None = None,
    ) -> None:
        self.spec, self.workers, self.batch_pairs = spec, workers, batch_pairs
        self.map_pairs = map_pairs or _ray_pairs(workers, spec.device, gpu)
        self.units = 0
        self.pairs = 0  # pairs sent to the workers, over every call
        self.worker_pids: set[int] = set()

    def __enter__(self) -> RayPairScores:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Ends the workers (the Ray pool's actors); the next call would start new ones."""
        close = getattr(self.map_pairs, "close", None)
        if close is not None:
            close()

    def __call__(self, pairs: Sequence[tuple[str, str]]) -> tuple[np.ndarray, list[EngineStats]]:
        out = np.full(len(pairs), np.nan, dtype=np.float32)
        stats: list[EngineStats] = []

        def units() -> Iterator[dict]:
            for start in range(0, len(pairs), self.batch_pairs):
                part = pairs[start : start + self.batch_pairs]
                self.units += 1
                self.pairs += len(part)
                yield {
                    "start": start,
                    "queries": [q for q, _ in part],
                    "passages": [p for _, p in part],
                }

        results = self.map_pairs(units(), {"spec": self.spec})
        try:
            for unit, r in results:
                scores = np.asarray(r["scores"], dtype=np.float32)
                out[unit["start"] : unit["start"] + len(scores)] = scores
                stats.append(r["stats"])
                self.worker_pids.add(int(r["worker"]))
        finally:
            results.close()
        return out, stats


def _ray_pairs(workers: int, device: str, gpu: bool | None) -> MapPairs:
    import ray

    from corpusmill.scale.ray_embed import actor_resources

    gpus = ray.cluster_resources().get("GPU", 0) if gpu is None else float(gpu)
    return _ActorPool(workers, actor_resources(gpus, device))


class _ActorPool:
    """`workers` ScoreWorker actors, started by the first call and kept for every call after
    it (each holds its cross-encoder resident) until `close` kills them."""

    def __init__(self, workers: int, resources: dict) -> None:
        self.workers, self.resources = workers, resources
        self.actors: list = []

    def __call__(self, units: Iterator[dict], worker_args: dict):
        from corpusmill.scale.ray_embed import _dispatch, start_actors

        if not self.actors:
            self.actors = start_actors(ScoreWorker, self.workers, self.resources, worker_args)
        yield from _dispatch(self.actors, units, 2)

    def close(self) -> None:
        from corpusmill.scale.ray_embed import stop_actors

        actors, self.actors = self.actors, []
        stop_actors(actors)
