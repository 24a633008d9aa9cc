"""`chunks` -> `embeddings` on a Ray cluster: the driver plans ids, workers read, embed and
write, the driver commits once.

The plan is the in-process path's (`sync.embed_step.Changes`: documents whose chunks
changed, content-hash reuse), made from ids alone: chunk id, document id, content hash and
each chunk's row address, at one pinned version of `chunks` (`Store.snapshot`). The driver
sends *work units* to the workers: the chunk ids of a slice of the stale chunks, the
`chunks` fragments that hold them, and which of their content hashes already have a stored
vector. Each `EmbedWorker` (an actor pool of `workers`, one resident model each) reads its
chunks' rows (text or stored token ids) from those fragments itself, applies the per-chunk
rules of `embed_step`, and writes a Lance fragment through the store. Text never passes
through the driver or Ray's object store; what the driver ships is ~100 bytes per chunk.

The driver then commits every fragment together with the deletion of the replaced
documents' old rows in one Lance commit tagged with the run key
(`Store.commit_fragments`): exactly once, or not at all.

A killed actor is restarted by Ray and its unit retried (`max_restarts`,
`max_task_retries`); the fragment a dead worker may have half-written is never committed,
because only fragments whose metadata came back reach the commit.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from corpusmill.errors import ConfigError
from corpusmill.scale.worker import EmbedWorker
from corpusmill.store import CommitResult, Store
from corpusmill.sync.embed_step import (
    CHUNK_SET,
    Changes,
    EmbeddingsReport,
    EmbedRules,
    Outcome,
    chunk_sets,
)
from corpusmill.sync.scope import docs_filter, partition_filter

BATCH_ROWS = 256  # chunks per work unit at most: one fragment each

# (worker class, units table, its constructor's kwargs) -> the workers' result rows
MapUnits = Callable[[type[EmbedWorker], pa.Table, dict], list[dict]]


def actor_resources(cluster_gpus: float, device: str = "auto") -> dict[str, float]:
    """Ray resources of one embedding actor. A cluster with GPUs: one GPU per actor (one
    resident model per GPU) and one CPU for the bookkeeping (Ray counts it; the tokenizer
    threads are not limited by it). Without GPUs, or with `device` "cpu": half a CPU, so
    on a 2-core machine the read tasks still get a CPU (whole-CPU actors stalled the job).
    `device` "cuda" on a cluster without GPUs fails here, before any actor starts."""
    if device == "cuda" and cluster_gpus < 1:
        raise ConfigError(
            "CORPUSMILL_DEVICE=cuda but the Ray cluster has no GPU; set CORPUSMILL_DEVICE=auto "
            "or cpu, or join a cluster with GPUs (CORPUSMILL_RAY_ADDRESS)"
        )
    if cluster_gpus >= 1 and device != "cpu":
        return {"num_gpus": 1, "num_cpus": 1}
    return {"num_cpus": 0.5}


@dataclass
class RayStats:
    workers: int = 0
    worker_processes: int = 0  # > workers when Ray restarted a killed actor
    model_loads: int = 0
    tokens: int = 0
    tokens_per_s_per_worker: dict[str, float] = field(default_factory=dict)
    devices: list[str] = field(default_factory=list)  # as the workers resolved them
    fragments: int = 0
    units: int = 0
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
            "work_units": self.units,
            "input_bytes_shipped": self.input_bytes_shipped,
            "embed_seconds": round(self.embed_seconds, 3),
            "committed": bool(self.commit and self.commit.committed),
            "commit_seconds": round(self.commit.seconds, 3) if self.commit else 0.0,
            "commit_attempts": self.commit.attempts if self.commit else 0,
        }


@dataclass
class Plan:
    changes: Changes  # stale and gone documents, as the in-process path finds them
    units: list[dict]  # {"chunk_ids", "fragments", "reuse"}
    chunks_version: int


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
    worker: type[EmbedWorker] = EmbedWorker,
    map_units: MapUnits | None = None,
) -> tuple[EmbeddingsReport, RayStats]:
    """Make `embeddings` mirror `chunks` for `partitions` (Ray must be initialised).
    `gpu` None: ask the cluster (`actor_resources`). `worker`: the actor class (a test
    passes a subclass that fails on purpose). `map_units` runs `worker`s over the units
    (default: a Ray actor pool of `workers`; tests pass one that runs a worker in-process)."""
    if map_units is None:
        map_units = ray_pool(workers, spec.device, gpu)
    t0 = time.perf_counter()
    stats = RayStats(workers=workers)
    read_version = int(store.ensure_embeddings(card).version)
    plan = plan_units(store, partitions, workers, batch_rows, card=card)
    report = plan.changes.report()
    fragments: list[dict] = []
    if plan.units:
        worker_args = {
            "spec": spec,
            "store": store.ref(),
            "chunks_version": plan.chunks_version,
            "read_version": read_version,
            "rules": EmbedRules(card, tokenizer_id),
        }
        fragments = _run_units(plan.units, worker, worker_args, map_units, stats, report)
    stats.fragments = len(fragments)
    doomed = plan.changes.stale + plan.changes.gone
    if fragments or doomed:
        stats.commit = store.commit_fragments(
            "embeddings",
            fragments,
            docs_filter(doomed) if doomed else None,
            run_key,
            read_version,
        )
    plan.changes.settle(report, store)
    report.rows = store.count("embeddings", partition_filter(partitions))
    report.sync_seconds = round(time.perf_counter() - t0, 3)
    return report, stats


def plan_units(store: Store, partitions, workers: int, batch_rows: int, *, card=None) -> Plan:
    """Which documents are stale or gone, and the work units for their chunks. Reads ids
    and row addresses only (no text, no token ids), at one version of `chunks` that the
    workers read too, so they see exactly the rows planned here."""
    pf = partition_filter(partitions)
    chunks = store.snapshot("chunks")
    ids = chunks.scan(CHUNK_SET, pf, with_row_address=True)
    changes = Changes.against(store, chunk_sets(ids), pf, card)
    stale = set(changes.stale)
    cols = [ids[c].to_pylist() for c in (*CHUNK_SET, "_rowaddr")]
    # Row-address order: a unit's chunks sit in one or two fragments, which is all a
    # worker scans to find them.
    rows = sorted(
        (addr, cid, digest)
        for cid, doc, digest, _doc_hash, addr in zip(*cols, strict=True)
        if doc in stale
    )
    # At least 4 units per worker, so every worker gets work and a restarted one's retry
    # is a small part of the job; at most `batch_rows` chunks per unit.
    n_units = max(workers * 4, -(-len(rows) // batch_rows)) if rows else 0
    size = max(1, -(-len(rows) // n_units)) if rows else 1
    units = []
    for i in range(0, len(rows), size):
        part = rows[i : i + size]
        units.append(
            {
                "chunk_ids": [cid for _a, cid, _h in part],
                "fragments": sorted({addr >> 32 for addr, _c, _h in part}),
                "reuse": sorted({h for _a, _c, h in part if h in changes.known}),
            }
        )
    return Plan(changes=changes, units=units, chunks_version=chunks.version)


UNIT_SCHEMA = pa.schema(
    [
        pa.field("chunk_ids", pa.list_(pa.string())),
        pa.field("fragments", pa.list_(pa.int64())),
        pa.field("reuse", pa.list_(pa.string())),
    ]
)


def ray_pool(workers: int, device: str = "auto", gpu: bool | None = None) -> MapUnits:
    """Runs the units on a pool of `workers` actors on the Ray cluster (the resources are
    chosen now, so a bad device setting fails before any planning)."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0) if gpu is None else float(gpu)
    resources = actor_resources(gpus, device)

    def run(worker: type[EmbedWorker], table: pa.Table, worker_args: dict) -> list[dict]:
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ds = ray.data.from_arrow(table).repartition(table.num_rows)
        return ds.map_batches(
            worker,
            fn_constructor_kwargs=worker_args,
            batch_size=1,  # one unit per call: one fragment, one retry on a restart
            batch_format="pyarrow",
            # A fixed pool, one unit in flight per actor: a free actor takes the next unit
            # instead of a busy one queueing it.
            compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1),
            # A killed actor is restarted and the unit it held is retried on it.
            max_restarts=3,
            max_task_retries=3,
            num_cpus=resources.get("num_cpus"),
            num_gpus=resources.get("num_gpus"),
        ).take_all()

    return run


def _run_units(units, worker, worker_args, map_units, stats, report) -> list[dict]:
    """Run the units through the workers; gather fragments, counts and failures."""
    table = pa.Table.from_pylist(units, schema=UNIT_SCHEMA)
    stats.units, stats.input_bytes_shipped = len(units), table.nbytes
    t0 = time.perf_counter()
    out = map_units(worker, table, worker_args)
    stats.embed_seconds = time.perf_counter() - t0
    fragments: list[dict] = []
    loads: dict[str, int] = defaultdict(int)
    tokens: dict[str, int] = defaultdict(int)
    seconds: dict[str, float] = defaultdict(float)
    devices = set()
    for r in out:
        fragments += json.loads(r["fragments"])
        worker = str(r["worker"])
        loads[worker] = max(loads[worker], int(r["model_loads"]))
        tokens[worker] += int(r["tokens"])
        seconds[worker] += float(r["seconds"])
        outcome = Outcome.from_json(str(r["outcome"]))
        if outcome.embedded:
            devices.add(str(r["device"]))
        report.add(outcome)
    stats.worker_processes = len(loads)
    stats.model_loads = sum(loads.values())
    stats.tokens = sum(tokens.values())
    stats.devices = sorted(devices)
    stats.tokens_per_s_per_worker = {
        w: round(tokens[w] / seconds[w], 1) for w in tokens if seconds[w] > 0 and tokens[w]
    }
    return fragments
