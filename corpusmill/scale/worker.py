"""The Ray worker: one resident model per actor; reads its chunks, embeds them, writes a
Lance fragment.

`EmbedWorker` is the callable class Ray Data's `map_batches` runs on an actor pool. It is
plain Python (no Ray import): the actor builds `Model(spec)` from the picklable ModelSpec
once and loads the weights on its first chunk to embed, keeping them for every unit after.
A unit names chunk ids and the `chunks` fragments holding them (`ray_embed.plan_units`);
the worker reads those rows itself, at the version the driver planned against, takes the
stored vector of every chunk whose content already has one (the local path's reuse), embeds
the rest, and writes the rows as a Lance fragment of the embeddings table. Only the
fragment's metadata and counts go back to the driver, which commits all of them at once
(`Store.commit_fragments`). Every read and write goes through the store (`Store.snapshot`).

The spec's device stays as configured ("auto" by default) and is resolved here, in the
actor: on a GPU actor Ray sets CUDA_VISIBLE_DEVICES to its GPU and "auto" becomes "cuda".
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter

import numpy as np
import pyarrow as pa

from corpusmill.store import StoreRef, chunks_schema
from corpusmill.sync.embeddings import NON_FINITE

# Fault injection for the tests (tests/e2e/test_ray_embeddings.py), labelled as such: a
# path in this variable makes the first worker to claim it SIGKILL its own process in
# the middle of a unit, as a machine or OOM kill would.
KILL_ONE_WORKER = "CORPUSMILL_TEST_KILL_ONE_WORKER"


class EmbedWorker:
    def __init__(
        self,
        spec,
        store: StoreRef,
        chunks_version: int,
        read_version: int,
        model_id: str,
        tokenizer_id: str,
        threads: int = 1,
    ) -> None:
        import torch

        from corpusmill.config import prepare_process
        from corpusmill.model import Model

        prepare_process()
        # Ray gives a 0.5-CPU actor one OpenMP thread; say so rather than inherit a guess.
        torch.set_num_threads(max(1, threads))
        self.model = Model(spec)  # weights load on the first chunk to embed
        self.model_id, self.tokenizer_id = model_id, tokenizer_id
        opened = store.open()
        self.chunks = opened.snapshot("chunks", chunks_version)
        self.embeddings = opened.snapshot("embeddings", read_version)
        present = set(self.chunks.column_names)
        self.columns = [f.name for f in chunks_schema() if f.name in present]
        self.dim = opened.open("embeddings").schema.field("vector").type.list_size

    def __call__(self, units: pa.Table) -> dict[str, np.ndarray]:
        results = [self._unit(u) for u in units.to_pylist()]
        return {k: np.array([r[k] for r in results]) for k in results[0]}

    def _unit(self, unit: dict) -> dict:
        t0 = time.perf_counter()
        rows = self._read(unit["chunk_ids"], unit["fragments"])
        stored = self._stored_vectors(unit["reuse"])
        hashes = rows.column("content_hash").to_pylist()
        vectors = np.zeros((rows.num_rows, self.dim), dtype=np.float32)
        todo, items = [], []
        ids = rows.column("input_ids").to_pylist() if "input_ids" in self.columns else None
        made_by = rows.column("tokenizer").to_pylist() if "tokenizer" in self.columns else None
        texts = rows.column("text").to_pylist()
        for i, digest in enumerate(hashes):
            if digest in stored:
                vectors[i] = stored[digest]
                continue
            usable = ids and ids[i] is not None and self.tokenizer_id and made_by
            usable = bool(usable and made_by[i] == self.tokenizer_id)  # type: ignore[index]
            todo.append(i)
            items.append(_token_ids(ids[i]) if usable else texts[i])  # type: ignore[index]
        failed: dict[int, str] = {}
        tokens = 0
        if items:
            _maybe_die()
            out, stats = self.model.encode(items)
            tokens = stats.real_tokens
            finite = np.isfinite(out).all(axis=1)
            for j, i in enumerate(todo):
                reason = stats.failed.get(j) or (None if finite[j] else NON_FINITE)
                if reason:
                    failed[i] = reason
                else:
                    vectors[i] = out[j]
        keep = [i for i in range(rows.num_rows) if i not in failed]
        embedded = Counter(rows.column("partition")[i].as_py() for i in todo if i not in failed)
        fragments = self._write(rows, vectors, keep)
        lineage = self.model.lineage()
        return {
            "worker": f"{os.getpid()}",
            "fragments": json.dumps(fragments),
            "rows": len(keep),
            "embedded": sum(embedded.values()),
            "embedded_by_partition": json.dumps(embedded),
            "tokens": tokens,
            "seconds": time.perf_counter() - t0,
            # Loads in this process so far: the driver takes the max per worker process.
            "model_loads": _loads(self.model.kind),
            "device": f"{lineage['device']}/{lineage['dtype']}",
            "failed": json.dumps([_quarantined(rows, i, r) for i, r in sorted(failed.items())]),
        }

    def _read(self, chunk_ids: list[str], fragments: list[int]) -> pa.Table:
        """The unit's chunk rows, scanning only the fragments the driver named."""
        rows = self.chunks.scan_in(self.columns, "chunk_id", chunk_ids, fragments=fragments)
        if rows.num_rows != len(chunk_ids):
            raise RuntimeError(
                f"read {rows.num_rows} of {len(chunk_ids)} planned chunks from `chunks` "
                f"version {self.chunks.version}"
            )
        return rows

    def _stored_vectors(self, hashes: list[str]) -> dict[str, np.ndarray]:
        """Stored vectors for these contents, at the version the driver planned against."""
        if not hashes:
            return {}
        found = self.embeddings.scan_in(["content_hash", "vector"], "content_hash", hashes)
        vecs = found.column("vector").combine_chunks()
        matrix = vecs.values.to_numpy(zero_copy_only=False).reshape(len(vecs), -1)
        return dict(zip(found.column("content_hash").to_pylist(), matrix, strict=True))

    def _write(self, rows: pa.Table, vectors: np.ndarray, keep: list[int]) -> list[dict]:
        if not keep:
            return []
        take = pa.array(keep, pa.int64())
        rows = rows.drop_columns([c for c in ("input_ids", "tokenizer") if c in rows.column_names])
        rows = rows.take(take)
        flat = pa.array(np.ascontiguousarray(vectors[keep], dtype=np.float32).reshape(-1))
        rows = rows.append_column("vector", pa.FixedSizeListArray.from_arrays(flat, self.dim))
        rows = rows.append_column("model_id", pa.array([self.model_id] * len(keep), pa.string()))
        return self.embeddings.write_fragments(rows)


def _token_ids(ids):
    from corpusmill.engine.inputs import TokenIds

    return TokenIds(ids)


def _loads(kind: str) -> int:
    from corpusmill.model import LOADS

    return LOADS[kind]


def _quarantined(rows: pa.Table, i: int, reason: str) -> list[str]:
    """doc id, source, where (uri#chunkN), reason: a `Quarantined` record for the driver."""
    r = {c: rows.column(c)[i].as_py() for c in ("doc_id", "source", "uri", "position")}
    return [r["doc_id"], r["source"], f"{r['uri']}#chunk{r['position']}", reason]


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
