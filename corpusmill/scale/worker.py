"""The Ray worker: one resident model per actor; reads its chunks, embeds them, writes a
Lance fragment.

`EmbedWorker` is the class of the driver's actor pool (`ray_embed.ray_pool`). It is
plain Python (no Ray import): the actor builds `Model(spec)` from the picklable ModelSpec
once and loads the weights on its first chunk to embed, keeping them for every unit after.
A unit names chunk ids and the `chunks` fragments holding them (`ray_embed.plan_slices`);
the worker reads those rows itself, at the version the driver planned against, and applies
the same per-chunk rules as the in-process path (`sync.embed_step`): stored vectors of the
same content reused, the rest embedded, bad vectors quarantined. It writes the rows as a
fragment of the embeddings table through the store; only the fragment's metadata and the
counts go back to the driver, which commits them a slice at a time (`Store.commit_fragments`).

The spec's device stays as configured ("auto" by default) and is resolved here, in the
actor: on a GPU actor Ray sets CUDA_VISIBLE_DEVICES to its GPU and "auto" becomes "cuda".
"""

from __future__ import annotations

import json
import os
import time

import pyarrow as pa

from corpusmill.store import StoreRef
from corpusmill.sync.embed_step import ChunkBatch, EmbedRules, chunk_columns, stored_vectors


class EmbedWorker:
    def __init__(
        self,
        spec,
        store: StoreRef,
        chunks_version: int,
        read_version: int,
        rules: EmbedRules,
        threads: int = 1,
    ) -> None:
        """`chunks_version`: the `chunks` version the units were planned from;
        `read_version`: the `embeddings` version whose stored vectors are reused."""
        from corpusmill.config import prepare_process

        prepare_process()
        self.rules = rules
        self.model = self._model(spec, threads)
        opened = store.open()
        self.chunks = opened.snapshot("chunks", chunks_version)
        self.embeddings = opened.snapshot("embeddings", read_version)
        self.columns = chunk_columns(self.chunks.column_names)

    def _model(self, spec, threads: int):
        """The resident model (its weights load on the first chunk to embed)."""
        import torch

        from corpusmill.model import Model

        # Ray gives a 0.5-CPU actor one OpenMP thread; say so rather than inherit a guess.
        torch.set_num_threads(max(1, threads))
        return Model(spec)

    def run(self, unit: dict) -> dict:
        """One work unit (`ray_embed.Planner`): read, embed, write one fragment."""
        t0 = time.perf_counter()
        rows = self._read(unit["chunk_ids"], unit["fragments"])
        stored = stored_vectors(self.embeddings.scan_in, unit["reuse"], self.rules)
        batch = ChunkBatch(self.rules, rows, stored)
        tokens = self._embed(batch)
        fragments = self.embeddings.write_fragments(batch.table())
        lineage = self.model.lineage()
        return {
            "worker": f"{os.getpid()}",
            "fragments": json.dumps(fragments),
            "outcome": batch.outcome.to_json(),
            "tokens": tokens,
            "seconds": time.perf_counter() - t0,
            # Loads in this process so far: the driver takes the max per worker process.
            "model_loads": self._loads(),
            "device": f"{lineage['device']}/{lineage['dtype']}",
        }

    def _loads(self) -> int:
        from corpusmill.model import LOADS

        return LOADS[self.model.kind]

    def _embed(self, batch: ChunkBatch) -> int:
        """Run the batch's `todo` through the model; the tokens it read."""
        if not batch.todo:
            return 0
        out, stats = self.model.encode([item for _cid, item in batch.todo])
        batch.take_all(out, stats.failed)
        return stats.real_tokens

    def _read(self, chunk_ids: list[str], fragments: list[int]) -> pa.Table:
        """The unit's chunk rows, scanning only the fragments the driver named."""
        rows = self.chunks.scan_in(self.columns, "chunk_id", chunk_ids, fragments=fragments)
        if rows.num_rows != len(chunk_ids):
            raise RuntimeError(
                f"read {rows.num_rows} of {len(chunk_ids)} planned chunks from `chunks` "
                f"version {self.chunks.version}"
            )
        return rows
