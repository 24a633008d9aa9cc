"""STAND-IN DEVICE for measuring the Ray path's scaling on a machine without GPUs.

Not a model. `StandInDevice.encode` sleeps for the time a device running at
`tokens_per_s` would take for the batch's tokens (the sleep releases the CPU, as a GPU
forward leaves the host free), then returns a unit vector per input (a one-hot row picked
by a hash of the input): cheap, deterministic, and passing the store's vector checks.
Everything around it is the real Ray path: `StandInWorker` is `EmbedWorker` with only its
model replaced, so it reads its chunks from `chunks`, applies the per-chunk rules of
`corpusmill/sync/embed_step.py`, writes a Lance fragment through the store, and the driver
plans, dispatches and commits as it does for a real model. Injected as the pool's actor
class (`sync_embeddings_on_ray(worker=...)`): corpusmill never selects it.

`fill_chunks` writes a synthetic `chunks` table (ids, hashes, text and stored token ids
made up, 8 chunks per document) for the benchmark and the driver-memory test.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pyarrow as pa

from corpusmill.engine.inputs import TokenIds
from corpusmill.engine.stats import EngineStats
from corpusmill.ids import ALL_PARTITIONS, chunk_id, content_hash, doc_key
from corpusmill.model.card import ModelCard
from corpusmill.scale.worker import EmbedWorker
from corpusmill.store import Store, chunks_schema

STAND_IN_TOKENS_PER_S = 5_000.0  # per worker: about what the engine does per CPU core here
TOKENIZER = "stand-in-tokenizer"  # the stored ids' tokenizer: the stand-in trusts them
PER_DOC = 8
CARD = ModelCard("stand-in/device", "r0", 32, "mean", True, 256)


class StandInDevice:
    """STAND-IN DEVICE, not a model: sleeps tokens / `tokens_per_s`, returns unit rows."""

    kind = "stand-in"

    def __init__(self, dim: int, tokens_per_s: float) -> None:
        self.dim, self.tokens_per_s = dim, tokens_per_s

    def encode(self, items: list) -> tuple[np.ndarray, EngineStats]:
        stats = EngineStats(items=len(items))
        rows = np.zeros((len(items), self.dim), dtype=np.float32)
        for i, item in enumerate(items):
            if isinstance(item, TokenIds):
                stats.real_tokens += len(item.ids)
                key = bytes(np.asarray(item.ids, dtype=np.int32)[:16])
            else:
                stats.real_tokens += len(item.split())  # text: its words stand for tokens
                key = item[:64].encode()
            rows[i, int.from_bytes(hashlib.blake2b(key, digest_size=4).digest()) % self.dim] = 1
        t0 = time.perf_counter()
        if self.tokens_per_s > 0:
            time.sleep(stats.real_tokens / self.tokens_per_s)
        stats.wall_seconds = stats.forward_seconds = time.perf_counter() - t0
        return rows, stats

    def lineage(self) -> dict:
        return {"device": "stand-in", "dtype": f"{self.tokens_per_s:g}tok/s"}


class StandInWorker(EmbedWorker):
    """`EmbedWorker` with a STAND-IN DEVICE for its model (see the module docstring).
    A subclass sets `tokens_per_s` (0: no sleep at all, for tests of the driver alone)."""

    tokens_per_s = STAND_IN_TOKENS_PER_S

    def _model(self, spec, threads: int):
        return StandInDevice(self.rules.card.dimension, self.tokens_per_s)

    def _loads(self) -> int:
        return 1  # the stand-in "loads" once per actor: it is built in __init__


def stand_in(tokens_per_s: float) -> type[StandInWorker]:
    """A `StandInWorker` class running at `tokens_per_s` per worker."""
    return type(f"StandIn{tokens_per_s:g}", (StandInWorker,), {"tokens_per_s": tokens_per_s})


def fill_chunks(
    store: Store,
    n: int,
    *,
    tokens: int = 0,
    text_words: int = 8,
    start: int = 0,
    texts: list[str] | None = None,
) -> int:
    """Add `n` synthetic chunks (8 per document, spread over the 16 shards) to `chunks`:
    `tokens` stored token ids each (0: none, the text is embedded), a text of `text_words`
    words, or `texts[i % len(texts)]` when given (real text for a real model). Returns the
    tokens the stand-in will count for them."""
    table = store.ensure("chunks", chunks_schema())
    schema = chunks_schema()
    step = 50_000
    for lo in range(start, start + n, step):
        idx = range(lo, min(start + n, lo + step))
        docs = [f"synthetic#{i // PER_DOC:09d}" for i in idx]
        m = len(docs)
        cols = {
            "chunk_id": [chunk_id(d, i % PER_DOC, "v1") for d, i in zip(docs, idx, strict=True)],
            "doc_id": docs,
            "doc_key": [doc_key(d) for d in docs],
            "source": ["synthetic"] * m,
            "uri": docs,
            "partition": [ALL_PARTITIONS[(i // PER_DOC) % 16] for i in idx],
            "position": [i % PER_DOC for i in idx],
            "text": [
                f"{texts[i % len(texts)]} [{i}]"
                if texts
                else " ".join(["w"] * (text_words - 1) + [str(i)])
                for i in idx
            ],
            "content_hash": [content_hash(str(i)) for i in idx],
            "doc_hash": [content_hash(d) for d in docs],
            "n_tokens": [tokens or text_words] * m,
            "chunker": ["v1"] * m,
        }
        if tokens:
            ids = np.arange(m * tokens, dtype=np.int32) % 30_000
            cols["input_ids"] = pa.ListArray.from_arrays(
                pa.array(np.arange(0, m * tokens + 1, tokens, dtype=np.int32)), pa.array(ids)
            )
            cols["tokenizer"] = [TOKENIZER] * m
        arrays = [
            cols[f.name]
            if isinstance(cols.get(f.name), pa.Array)
            else pa.array(cols.get(f.name, [None] * m), f.type)
            for f in schema
        ]
        table.add(pa.Table.from_arrays(arrays, schema=schema))
    return n * (tokens or text_words)
