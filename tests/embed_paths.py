"""Running the embeddings step's two paths in one test process.

`in_process` is what `scale.ray_embed.ray_pool` does, minus Ray: one worker, one unit per
call. `FakeEmbedder` is a labelled FAKE model (not a model) whose vectors depend only on
each input, so the two paths' rows can be compared exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Iterator

import numpy as np

from corpusmill.engine.inputs import TokenIds
from corpusmill.engine.stats import EngineStats
from corpusmill.scale.worker import EmbedWorker

POISON = "POISON"  # an input holding it embeds to NaN, as a broken weight would make it
TOO_LARGE = "TOOLARGE"  # an input holding it fails in the engine, as one too large even alone
TOO_LARGE_REASON = "the input does not fit the device even alone"


def in_process(
    worker_class: type[EmbedWorker], units: Iterator[dict], worker_args: dict
) -> Generator[tuple[dict, dict], None, None]:
    """What `ray_pool` does, minus Ray: one worker, one unit at a time, taken from the
    driver's stream only when the previous one is done."""
    worker = worker_class(**worker_args)
    for unit in units:
        yield unit, worker.run(unit)


class FakeEmbedder:
    """FAKE embedder, for comparing the two paths: a unit vector from a hash of each input
    (text, or stored token ids), NaN for POISON, an engine failure for TOOLARGE. Records
    every input it was given, as ("text", ...) or ("ids", ...)."""

    kind = "embedder"

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.inputs: list[tuple[str, object]] = []

    def encode(self, items: list) -> tuple[np.ndarray, EngineStats]:
        rows = np.zeros((len(items), self.dim), dtype=np.float32)
        stats = EngineStats(items=len(items))
        for i, item in enumerate(items):
            if isinstance(item, TokenIds):
                label: tuple[str, object] = ("ids", tuple(item.ids))
            else:
                label = ("text", item)
            self.inputs.append(label)
            stats.real_tokens += len(str(label[1]).split())
            if POISON in str(label[1]) or TOO_LARGE in str(label[1]):
                rows[i] = np.nan
                if TOO_LARGE in str(label[1]):
                    stats.failed[i] = TOO_LARGE_REASON
                continue
            digest = hashlib.sha256(repr(label).encode()).digest()
            v = np.frombuffer(digest[: self.dim], dtype=np.uint8).astype(np.float32) - 127.5
            rows[i] = v / np.linalg.norm(v)
        return rows, stats

    def embed_stream(self, items, sink, window: int = 3) -> None:
        """The in-process path's streaming: windows of `window` items, each to `sink`."""
        batch: list = []
        for item in items:
            batch.append(item)
            if len(batch) == window:
                self._sink_window(batch, sink)
                batch = []
        if batch:
            self._sink_window(batch, sink)

    def _sink_window(self, batch: list, sink) -> None:
        rows, stats = self.encode([text for _cid, text in batch])
        sink(batch, rows, stats.failed)

    def lineage(self) -> dict:
        return {"device": "cpu", "dtype": "float32"}
