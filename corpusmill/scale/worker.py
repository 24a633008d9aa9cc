"""The Ray worker: one resident model per actor; embeds batches and writes Lance fragments.

`EmbedWorker` is the callable class Ray Data's `map_batches` runs on an actor pool. It is
plain Python (no Ray import): the actor builds `Model(spec)` from the picklable ModelSpec
once, on its first batch, and keeps the weights for every batch after it. Each batch's
rows (chunk columns + vector) go straight into a Lance fragment of the embeddings table,
written by the worker, not shipped back: only the fragment's metadata returns to the
driver, which commits all of them at once (`commit.commit_fragments`).
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pyarrow as pa

# Fault injection for the tests (tests/e2e/test_ray_embeddings.py), labelled as such: a
# path in this variable makes the first worker to claim it SIGKILL its own process in
# the middle of a batch, as a machine or OOM kill would.
KILL_ONE_WORKER = "CORPUSMILL_TEST_KILL_ONE_WORKER"


class EmbedWorker:
    def __init__(
        self,
        spec,
        table_uri: str,
        schema: pa.Schema,
        model_id: str,
        storage_options: dict[str, str],
        storage_version: str,
        threads: int = 1,
    ) -> None:
        import torch

        from corpusmill.config import prepare_process
        from corpusmill.model import Model

        prepare_process()
        # Ray gives a 0.5-CPU actor one OpenMP thread; say so rather than inherit a guess.
        torch.set_num_threads(max(1, threads))
        self.model = Model(spec)
        self.table_uri, self.schema, self.model_id = table_uri, schema, model_id
        self.storage_options = storage_options or None
        self.storage_version = storage_version

    def __call__(self, batch: pa.Table) -> dict[str, np.ndarray]:
        from lance.fragment import write_fragments

        from corpusmill.engine.batch import TokenIds
        from corpusmill.model import LOADS

        t0 = time.perf_counter()
        ids = batch.column("input_ids").to_pylist() if "input_ids" in batch.column_names else None
        texts = batch.column("text").to_pylist()
        ids = ids or [None] * len(texts)
        items = [t if i is None else TokenIds(i) for i, t in zip(ids, texts, strict=True)]
        _maybe_die()
        vectors, stats = self.model.encode(items)
        failed = set(stats.failed)
        keep = [i for i in range(len(items)) if i not in failed]
        rows = batch.drop_columns([c for c in ("input_ids",) if c in batch.column_names])
        rows = rows.take(pa.array(keep, pa.int64()))
        dim = vectors.shape[1]
        flat = pa.array(np.ascontiguousarray(vectors[keep], dtype=np.float32).reshape(-1))
        rows = rows.append_column("vector", pa.FixedSizeListArray.from_arrays(flat, dim))
        rows = rows.append_column("model_id", pa.array([self.model_id] * len(keep), pa.string()))
        rows = rows.select(self.schema.names).cast(self.schema)
        fragments = []
        if rows.num_rows:
            fragments = write_fragments(
                rows,
                self.table_uri,
                schema=self.schema,
                storage_options=self.storage_options,
                data_storage_version=self.storage_version,
            )
        seconds = time.perf_counter() - t0
        chunk_ids = batch.column("chunk_id").to_pylist()
        return {
            "worker": np.array([f"{os.getpid()}"]),
            "fragments": np.array([json.dumps([f.to_json() for f in fragments])]),
            "rows": np.array([rows.num_rows]),
            "tokens": np.array([stats.real_tokens]),
            "seconds": np.array([seconds]),
            # Loads in this process so far: the driver takes the max per worker process.
            "model_loads": np.array([LOADS[self.model.kind]]),
            "failed": np.array([json.dumps({chunk_ids[i]: r for i, r in stats.failed.items()})]),
        }


def _maybe_die() -> None:
    path = os.environ.get(KILL_ONE_WORKER)
    if not path:
        return
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # another worker (or this one, before its restart) already died once
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os.kill(os.getpid(), 9)
