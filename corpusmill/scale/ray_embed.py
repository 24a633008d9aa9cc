"""`chunks` -> `embeddings` on a Ray cluster: the driver plans, workers embed and write,
the driver commits once.

The plan is the local path's (`sync.embeddings`): documents whose chunks changed, and
only chunks whose content no stored vector has go to the model (content-hash reuse).
Those rows become a Ray dataset; `map_batches` runs them through an actor pool of
`workers` `EmbedWorker`s, each holding its own resident model, which write Lance
fragments. The driver writes one fragment of the reused rows itself, then commits every
fragment together with the deletion of the replaced documents' old rows in one Lance
commit tagged with the run key (`commit.commit_fragments`): exactly once, or not at all.

A killed actor is restarted by Ray and its batch retried (`max_restarts`,
`max_task_retries`); the fragment a dead worker may have half-written is never committed,
because only fragments whose metadata came back reach the commit.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from corpusmill.ids import doc_key
from corpusmill.scale.commit import CommitResult, commit_fragments
from corpusmill.scale.worker import EmbedWorker
from corpusmill.sources import Quarantined
from corpusmill.store import Store, chunks_schema, groups_of
from corpusmill.sync.common import DOC_GROUP, docs_filter, partition_filter
from corpusmill.sync.embeddings import EmbeddingsReport, _chunk_sets, _stored_vectors

BATCH_ROWS = 256  # chunks per map_batches call: one fragment each


@dataclass
class RayStats:
    workers: int = 0
    worker_processes: int = 0  # > workers when Ray restarted a killed actor
    model_loads: int = 0
    tokens: int = 0
    tokens_per_s_per_worker: dict[str, float] = field(default_factory=dict)
    fragments: int = 0
    input_bytes_shipped: int = 0  # what the driver put into Ray's object store for the workers
    embed_seconds: float = 0.0
    commit: CommitResult | None = None

    def as_metadata(self) -> dict[str, Any]:
        rates = list(self.tokens_per_s_per_worker.values())
        return {
            "executor": "ray",
            "workers": self.workers,
            "worker_processes": self.worker_processes,
            "model_loads": self.model_loads,
            "tokens": self.tokens,
            "tokens_per_s": round(self.tokens / self.embed_seconds, 1)
            if self.embed_seconds
            else 0.0,
            "tokens_per_s_per_worker": json.dumps(self.tokens_per_s_per_worker),
            "tokens_per_s_worker_mean": round(sum(rates) / len(rates), 1) if rates else 0.0,
            "fragments": self.fragments,
            "input_bytes_shipped": self.input_bytes_shipped,
            "embed_seconds": round(self.embed_seconds, 3),
            "committed": bool(self.commit and self.commit.committed),
            "commit_seconds": round(self.commit.seconds, 3) if self.commit else 0.0,
            "commit_attempts": self.commit.attempts if self.commit else 0,
        }


def sync_embeddings_on_ray(
    store: Store,
    spec,
    card,
    partitions,
    *,
    run_key: str,
    workers: int = 2,
    tokenizer_id: str = "",
    gpu: bool | None = None,
    batch_rows: int = BATCH_ROWS,
) -> tuple[EmbeddingsReport, RayStats]:
    """Make `embeddings` mirror `chunks` for `partitions` (Ray must be initialised).
    `gpu` None: one GPU per worker when the cluster has GPUs, else half a CPU each (on 2
    cores, whole-CPU actors leave no CPU for the read tasks and the job stalls)."""
    import ray

    if gpu is None:
        gpu = ray.cluster_resources().get("GPU", 0) > 0
    t0 = time.perf_counter()
    report, stats = EmbeddingsReport(), RayStats(workers=workers)
    table = store.ensure_embeddings(card)
    read_version = int(table.version)
    pf = partition_filter(partitions)
    want = _chunk_sets(store, "chunks", pf)
    have = _chunk_sets(store, "embeddings", pf)
    stale = sorted(d for d in want if want[d] != have.get(d))
    gone = sorted(d for d in have if d not in want)
    report.documents_updated, report.documents_removed = len(stale), len(gone)
    schema = pa.schema([f for f in table.schema], metadata=None)
    known = set(store.scan("embeddings", ["content_hash"])["content_hash"].to_pylist())
    reused, todo = _plan(store, stale, known, tokenizer_id)
    fragments = []
    if reused:
        from lance.fragment import write_fragments

        rows = pa.Table.from_pylist(
            [{**r, "model_id": card.model_id} for r in reused], schema=schema
        )
        fragments += write_fragments(
            rows,
            store.table_uri("embeddings"),
            schema=schema,
            storage_options=store.storage_options or None,
            data_storage_version=_storage_version(store),
        )
    if todo:
        fragments += _embed(
            store, spec, card, schema, todo, workers, gpu, batch_rows, stats, report
        )
    stats.fragments = len(fragments)
    if fragments or stale or gone:
        stats.commit = commit_fragments(
            store.table_uri("embeddings"),
            fragments,
            docs_filter(stale + gone) if stale or gone else None,
            run_key,
            read_version,
            store.storage_options,
        )
    n_wanted = sum(len(v) for v in want.values())
    report.chunks_reused = n_wanted - report.chunks_embedded - report.chunks_failed
    report.rows = store.count("embeddings", pf)
    report.sync_seconds = round(time.perf_counter() - t0, 3)
    return report, stats


def _plan(store: Store, stale: list[str], known: set[str], tokenizer_id: str):
    """Rows of the stale documents: those with a stored vector for their content, and
    those the model must embed (with their stored token ids when this tokenizer made them)."""
    columns = [f.name for f in chunks_schema()]
    chunk_table = store.open("chunks")
    present = set(chunk_table.schema.names) if chunk_table is not None else set()
    reused, todo = [], []
    for group in groups_of(stale, DOC_GROUP):
        rows = store.scan_in(
            "chunks", [c for c in columns if c in present], "doc_key", [doc_key(d) for d in group]
        ).to_pylist()
        vectors = _stored_vectors(store, {r["content_hash"] for r in rows} & known)
        for r in rows:
            ids, made_by = r.pop("input_ids", None), r.pop("tokenizer", None)
            vec = vectors.get(r["content_hash"])
            if vec is not None:
                reused.append({**r, "vector": vec})
            else:
                usable = ids is not None and tokenizer_id and made_by == tokenizer_id
                todo.append({**r, "input_ids": ids if usable else None})
    return reused, todo


def _storage_version(store: Store) -> str:
    import lance

    ds = lance.dataset(store.table_uri("embeddings"), storage_options=store.storage_options or None)
    return ds.data_storage_version


def _embed(store, spec, card, schema, todo, workers, gpu, batch_rows, stats, report):
    import ray.data
    from lance.fragment import FragmentMetadata

    input_schema = pa.schema(
        [f for f in schema if f.name not in ("vector", "model_id")]
        + [pa.field("input_ids", pa.list_(pa.int32()))]
    )
    rows = pa.Table.from_pylist(todo, schema=input_schema)
    stats.input_bytes_shipped = rows.nbytes
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    # At least 4 blocks per worker, so every worker gets work and a restarted one's retry
    # is a small part of the job; at most `batch_rows` chunks per block.
    blocks = max(workers * 4, -(-rows.num_rows // batch_rows))
    batch = max(1, -(-rows.num_rows // blocks))
    ds = ray.data.from_arrow(rows).repartition(blocks)
    resources = {"num_gpus": 1} if gpu else {"num_cpus": 0.5}
    t0 = time.perf_counter()
    out = ds.map_batches(
        EmbedWorker,
        fn_constructor_kwargs={
            "spec": spec,
            "table_uri": store.table_uri("embeddings"),
            "schema": schema,
            "model_id": card.model_id,
            "storage_options": store.storage_options,
            "storage_version": _storage_version(store),
        },
        batch_size=batch,
        batch_format="pyarrow",
        # A fixed pool, one batch in flight per actor: a free actor takes the next block
        # instead of a busy one queueing it.
        compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1),
        # A killed actor is restarted and the batch it held is retried on it.
        max_restarts=3,
        max_task_retries=3,
        **resources,
    ).take_all()
    stats.embed_seconds = time.perf_counter() - t0
    fragments = []
    loads: dict[str, int] = defaultdict(int)
    tokens: dict[str, int] = defaultdict(int)
    seconds: dict[str, float] = defaultdict(float)
    for r in out:
        fragments += [FragmentMetadata.from_json(json.dumps(f)) for f in json.loads(r["fragments"])]
        worker = str(r["worker"])
        loads[worker] = max(loads[worker], int(r["model_loads"]))
        tokens[worker] += int(r["tokens"])
        seconds[worker] += float(r["seconds"])
        report.chunks_embedded += int(r["rows"])
        for cid, reason in json.loads(r["failed"]).items():
            report.chunks_failed += 1
            row = next(t for t in todo if t["chunk_id"] == cid)
            report._failed.append(
                Quarantined(
                    row["doc_id"], row["source"], f"{row['uri']}#chunk{row['position']}", reason
                )
            )
    stats.worker_processes = len(loads)
    stats.model_loads = sum(loads.values())
    stats.tokens = sum(tokens.values())
    stats.tokens_per_s_per_worker = {
        w: round(tokens[w] / seconds[w], 1) for w in tokens if seconds[w] > 0
    }
    return fragments
