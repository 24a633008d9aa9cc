"""`chunks` -> `embeddings` on a Ray cluster: the driver plans ids a slice at a time,
workers read, embed and write, the driver commits each slice once.

The plan is the in-process path's (`sync.embed_step.Changes`: documents whose chunks
changed, content-hash reuse), made from ids alone: chunk id, document id, content hash and
each chunk's row address, at one pinned version of `chunks` (`Store.snapshot`). It is made
as a stream, so that what the driver holds does not grow with the run: the documents of
the run's shards are cut into *slices* by ranges of their hex key (`doc_key`), about
`slice_chunks` chunks each, and only the slice being planned, plus the slices whose work
units are still out, are held. A slice is cut into *work units*: the chunk ids of up to
`batch_rows` stale chunks, the `chunks` fragments that hold them, and which of their
content hashes already have a stored vector. At most `in_flight` units are out at once
(`ray_pool`: an actor pool of `workers`, one resident model each; a free actor takes the
next unit). Each `EmbedWorker` reads its chunks' rows (text or stored token ids) from
those fragments itself, applies the per-chunk rules of `embed_step`, and writes a Lance
fragment through the store. Text never passes through the driver or Ray's object store;
what the driver ships is ~100 bytes per chunk.

When a slice's last unit is back, the driver commits its fragments together with the
deletion of its replaced documents' old rows in one Lance commit tagged with the run key
and the slice's key range (`Store.commit_fragments`): exactly once, or not at all. A
document lies in one slice, so readers see each document's old rows or its new ones,
never neither; the commit's size is bounded by the slice, not the run.

A killed actor is restarted by Ray and its units retried (`max_restarts`,
`max_task_retries`); the fragment a dead worker may have half-written is never committed,
because only fragments whose metadata came back reach a commit. A killed driver leaves its
committed slices committed; the rerun finds those documents up to date and plans the rest.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import defaultdict
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from corpusmill.errors import ConfigError
from corpusmill.ids import ALL_PARTITIONS
from corpusmill.model.card import ModelCard
from corpusmill.scale.worker import EmbedWorker
from corpusmill.store import CommitResult, Store
from corpusmill.store.checks import DamagedRow
from corpusmill.store.predicates import all_of, range_filter
from corpusmill.sync.embed_step import (
    CHUNK_SET,
    Changes,
    EmbeddingsReport,
    EmbedRules,
    Outcome,
    chunk_sets,
    count_repaired,
    known_among,
)
from corpusmill.sync.scope import docs_filter, partition_filter

BATCH_ROWS = 256  # chunks per work unit at most: one fragment each
SLICE_CHUNKS = 25_000  # chunks per slice, about: what the driver plans and holds at once
KEY_DIGITS = 8  # hex digits of a slice's `doc_key` bounds

# (worker class, the units as a stream, its constructor's kwargs) -> (unit, result) pairs,
# in the order the results come back
MapUnits = Callable[
    [type[EmbedWorker], Iterator[dict], dict], Generator[tuple[dict, dict], None, None]
]


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
    slices: int = 0
    input_bytes_shipped: int = 0  # what the driver put into Ray's object store for the workers
    embed_seconds: float = 0.0
    commits: int = 0  # slice commits that landed
    commits_skipped: int = 0  # slice commits whose run key had already landed (a replay)
    commit: CommitResult | None = None  # the run's commits together: seconds and attempts summed

    def add_commit(self, result: CommitResult) -> None:
        if result.committed:
            self.commits += 1
        else:
            self.commits_skipped += 1
        if self.commit is None:
            self.commit = result
            return
        c = self.commit
        self.commit = CommitResult(
            c.committed or result.committed,
            result.version,
            c.seconds + result.seconds,
            c.attempts + result.attempts,
            c.new_rows + result.new_rows,
        )

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
            "slices": self.slices,
            "input_bytes_shipped": self.input_bytes_shipped,
            "embed_seconds": round(self.embed_seconds, 3),
            "committed": bool(self.commit and self.commit.committed),
            "commits": self.commits,
            "commits_skipped": self.commits_skipped,
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
    slice_chunks: int = SLICE_CHUNKS,
    in_flight: int | None = None,
    worker: type[EmbedWorker] = EmbedWorker,
    map_units: MapUnits | None = None,
) -> tuple[EmbeddingsReport, RayStats]:
    """Make `embeddings` mirror `chunks` for `partitions` (Ray must be initialised).
    `gpu` None: ask the cluster (`actor_resources`). `in_flight`: units out at once
    (default 2 per worker). `worker`: the actor class (a test passes a subclass that fails
    on purpose, the scale benchmark a stand-in device). `map_units` runs `worker`s over
    the units (default: a Ray actor pool of `workers`; tests pass one that runs a worker
    in-process)."""
    if map_units is None:
        map_units = ray_pool(workers, spec.device, gpu, in_flight)
    t0 = time.perf_counter()
    with large_allocations_to_mmap():
        store = store.lean()  # the driver commits many versions: small Lance caches
        stats = RayStats(workers=workers)
        read_version = int(store.ensure_embeddings(card).version)
        planner = Planner(store, partitions, workers, batch_rows, read_version, card=card)
        worker_args = {
            "spec": spec,
            "store": store.ref(),
            "chunks_version": planner.chunks.version,
            "read_version": read_version,
            "rules": EmbedRules(card, tokenizer_id),
        }
        run = _Run(store, run_key, stats, card)
        results = map_units(worker, run.units(planner.slices(slice_chunks)), worker_args)
        with contextlib.closing(results):  # a failure stops the pool's actors at once
            for unit, result in results:
                run.result(unit, result)
        stats.embed_seconds = time.perf_counter() - t0
        run.finish()
        report = run.report
        # Every shard: counted from the manifest; a filter would open every data file.
        every = set(partitions) >= set(ALL_PARTITIONS)
        report.rows = store.count("embeddings", None if every else partition_filter(partitions))
        report.sync_seconds = round(time.perf_counter() - t0, 3)
    return report, stats


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
DRIVER_MMAP_THRESHOLD = 256 * 1024  # bytes, while a driver runs
AFTER_MMAP_THRESHOLD = 32 * 2**20  # bytes, after: where glibc's own threshold tops out


@contextlib.contextmanager
def large_allocations_to_mmap(threshold: int = DRIVER_MMAP_THRESHOLD) -> Iterator[bool]:
    """While the driver runs, glibc serves every allocation of `threshold` bytes or more
    by mmap and gives it back to the system when it is freed (glibc's default threshold
    rises to the largest block freed so far, up to 32 MiB). Yields whether it was set.

    The driver's one process-wide memory setting, made here and only for the run. Each
    slice commit reads and writes a Lance manifest that lists every fragment so far, so
    its transient buffers grow with the run; under the rising threshold they came from
    the malloc arenas of Lance's threads and stayed there fragmented: the driver grew by
    ~2-3 MB a slice (BENCHMARKS.md, driver memory, measured with and without it; glibc's
    MALLOC_ARENA_MAX=2 did as well, but only when set before the process starts). A page
    fault per large block is nothing beside a commit. Afterwards the threshold is left
    at 32 MiB, what glibc's own reaches in a process that does large work (a forward in
    the same process then keeps reusing its blocks). Does nothing but on glibc."""
    import ctypes
    import ctypes.util

    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        yield False
        return
    done = bool(mallopt(M_MMAP_THRESHOLD, threshold))
    try:
        yield done
    finally:
        if done:
            mallopt(M_MMAP_THRESHOLD, AFTER_MMAP_THRESHOLD)


@dataclass
class SlicePlan:
    """One slice of the run: its documents' changes and its work units."""

    key: str  # its range of `doc_key`, "low-high": with the run key, its commit's key
    changes: Changes
    units: list[dict]  # {"chunk_ids", "fragments", "reuse"}
    chunks_version: int
    read_version: int  # `embeddings` when it was planned: the replay check reads from there


class Planner:
    """Plans a run's slices one at a time, from ids, at one pinned version of `chunks` and
    of `embeddings` (the versions the workers read too, so they see exactly the rows
    planned here)."""

    def __init__(
        self,
        store: Store,
        partitions,
        workers: int,
        batch_rows: int,
        read_version: int,
        card: ModelCard | None = None,
    ) -> None:
        self.store, self.workers, self.batch_rows = store, workers, batch_rows
        self.card = card  # with it, stored vectors are checked too (damage is re-embedded)
        self.where = partition_filter(partitions)
        self.chunks = store.snapshot("chunks")
        self.embeddings = store.snapshot("embeddings", read_version)
        # Each slice's documents are read as they were when the run began: the run's own
        # commits touch only other slices' documents, and the slice's plan must not read
        # (and cache the metadata of) the fragments they added, or the driver grows with
        # the run (BENCHMARKS.md, driver memory).
        self.planned_from = store.at_versions(embeddings=read_version)

    def slices(self, slice_chunks: int = SLICE_CHUNKS) -> Iterator[SlicePlan]:
        """The run's slices, planned as they are asked for."""
        n = max(1, -(-self.chunks.count(self.where) // max(1, slice_chunks)))
        for low, high in key_ranges(n):
            yield self.plan(low, high)

    def plan(self, low: str = "", high: str = "") -> SlicePlan:
        """The slice of documents whose `doc_key` lies in [low, high) ("": open)."""
        where = all_of(self.where, range_filter("doc_key", low, high))
        ids = self.chunks.scan(CHUNK_SET, where, with_row_address=True)
        changes = Changes.against(
            self.planned_from, chunk_sets(ids), where, self.card, known=self._known
        )
        return SlicePlan(
            key=f"{low}-{high}",
            changes=changes,
            units=self._units(ids, changes),
            chunks_version=self.chunks.version,
            read_version=self.store.version("embeddings"),
        )

    def _known(self, hashes: set[str]) -> set[str]:
        return known_among(hashes, self.embeddings.batches(["content_hash"]))

    def _units(self, ids: pa.Table, changes: Changes) -> list[dict]:
        stale = set(changes.stale)
        cols = [ids[c].to_pylist() for c in (*CHUNK_SET, "_rowaddr")]
        # Row-address order: a unit's chunks sit in one or two fragments, which is all a
        # worker scans to find them.
        rows = sorted(
            (addr, cid, digest)
            for cid, doc, digest, _doc_hash, addr in zip(*cols, strict=True)
            if doc in stale
        )
        if not rows:
            return []
        # At least 4 units per worker, so every worker gets work and a restarted one's
        # retry is a small part of the job; at most `batch_rows` chunks per unit.
        n_units = max(self.workers * 4, -(-len(rows) // self.batch_rows))
        size = max(1, -(-len(rows) // n_units))
        return [
            {
                "chunk_ids": [cid for _a, cid, _h in part],
                "fragments": sorted({addr >> 32 for addr, _c, _h in part}),
                "reuse": sorted({h for _a, _c, h in part if h in changes.known}),
            }
            for part in (rows[i : i + size] for i in range(0, len(rows), size))
        ]


def key_ranges(n: int) -> list[tuple[str, str]]:
    """`n` ranges of hex keys, equal in key space, together covering every string ("": an
    open end): `doc_key` is a digest, so each holds about 1/n of the documents."""
    span = 16**KEY_DIGITS
    bounds = ["", *(f"{span * i // n:0{KEY_DIGITS}x}" for i in range(1, n)), ""]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def plan_units(
    store: Store, partitions, workers: int, batch_rows: int, *, card: ModelCard | None = None
) -> SlicePlan:
    """The whole run as one slice (what a small run is): its changes and units."""
    read_version = int(store.version("embeddings"))
    return Planner(store, partitions, workers, batch_rows, read_version, card).plan()


def _unit_bytes(unit: dict) -> int:
    """About what a unit weighs in Ray's object store: its ids and fragment numbers."""
    ids = sum(len(c) for c in unit["chunk_ids"]) + sum(len(h) for h in unit["reuse"])
    return ids + 8 * len(unit["fragments"])


def ray_pool(
    workers: int,
    device: str = "auto",
    gpu: bool | None = None,
    in_flight: int | None = None,
    on_ready: Callable[[], None] | None = None,
) -> MapUnits:
    """Runs the units on a pool of `workers` actors on the Ray cluster, at most
    `in_flight` (default 2 per actor) out at once: each actor holds the unit it works on
    and the next, so it never waits on the driver. The resources are chosen now, so a bad
    device setting fails before any planning. `on_ready` is called once every actor is up
    (a benchmark times the steady state from there)."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0) if gpu is None else float(gpu)
    resources = actor_resources(gpus, device)
    per_actor = max(1, (in_flight or 2 * workers) // workers)

    def run(worker: type[EmbedWorker], units: Iterator[dict], worker_args: dict):
        actors = start_actors(worker, workers, resources, worker_args)
        try:
            if on_ready is not None:
                ray.get([a.__ray_ready__.remote() for a in actors])
                on_ready()
            yield from _dispatch(actors, units, per_actor)
        finally:
            stop_actors(actors)

    return run


def start_actors(worker: type, workers: int, resources: dict, worker_args: dict) -> list:
    """`workers` actors of class `worker` (the embeddings' and the rerank pairs' pools). A
    killed actor is restarted and the units it held are retried on it."""
    import ray

    actor_class: Any = ray.remote(worker)
    options = actor_class.options(max_restarts=3, max_task_retries=3, **resources)
    return [options.remote(**worker_args) for _ in range(workers)]


def stop_actors(actors: list) -> None:
    import ray

    for actor in actors:
        ray.kill(actor)


def _dispatch(actors: list, units: Iterator[dict], per_actor: int):
    """(unit, result) as each comes back; a unit is sent to the least busy actor as soon as
    one holds fewer than `per_actor`, and only then is the next one asked of `units`."""
    import ray

    busy = [0] * len(actors)
    out: dict = {}  # object ref -> (actor index, unit)
    source = iter(units)
    more = True
    while True:
        while more and min(busy) < per_actor:
            unit = next(source, None)
            if unit is None:
                more = False
                break
            i = busy.index(min(busy))
            out[actors[i].run.remote(unit)] = (i, unit)
            busy[i] += 1
        if not out:
            return
        (ref,), _ = ray.wait(list(out), num_returns=1)
        i, unit = out.pop(ref)
        busy[i] -= 1
        yield unit, ray.get(ref)


@dataclass
class _Open:
    """A slice whose units are out: what its commit and its report figures need (not its
    plan: that is dropped once its units are shipped)."""

    key: str
    read_version: int
    replaced: list[str]  # documents whose old rows its commit deletes
    wanted: int  # chunks its documents hold
    units: int
    damaged: list[DamagedRow]  # stored rows that failed the vector rule: repaired by it?
    fragments: list[dict] = field(default_factory=list)
    embedded: int = 0
    failed: int = 0


class _Run:
    """The driver's state over the stream of results: the open slices and the totals."""

    def __init__(
        self, store: Store, run_key: str, stats: RayStats, card: ModelCard | None = None
    ) -> None:
        self.store, self.run_key, self.stats, self.card = store, run_key, stats, card
        self.report = EmbeddingsReport()
        self.open: dict[str, _Open] = {}
        self.loads: dict[str, int] = defaultdict(int)
        self.tokens: dict[str, int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)
        self.devices: set[str] = set()

    def units(self, slices: Iterator[SlicePlan]) -> Iterator[dict]:
        """Every slice's units, tagged with their slice; a slice with none (only removed
        documents, or nothing to do) is settled as soon as it is planned."""
        for pending, units in map(self._open, slices):
            if not units:
                self.close(pending)
            units.reverse()
            while units:  # a shipped unit is held only while it is out (`_dispatch`)
                unit = units.pop()
                self.stats.units += 1
                self.stats.input_bytes_shipped += _unit_bytes(unit)
                yield {**unit, "slice": pending.key}

    def _open(self, plan: SlicePlan) -> tuple[_Open, list[dict]]:
        """The slice's figures and its units; the rest of its plan is not kept."""
        changes = plan.changes
        self.stats.slices += 1
        self.report.documents_updated += len(changes.stale)
        self.report.documents_removed += len(changes.gone)
        self.report.chunks_to_embed += changes.to_embed
        found = changes.report()
        self.report.vectors_damaged += found.vectors_damaged
        if found.vectors_damaged_sample and not self.report.vectors_damaged_sample:
            self.report.vectors_damaged_sample = found.vectors_damaged_sample
        pending = _Open(
            plan.key,
            plan.read_version,
            changes.replaced,
            changes.wanted,
            len(plan.units),
            changes.damaged,
        )
        self.open[plan.key] = pending
        return pending, plan.units

    def result(self, unit: dict, r: dict) -> None:
        pending = self.open[unit["slice"]]
        pending.fragments += json.loads(r["fragments"])
        worker = str(r["worker"])
        self.loads[worker] = max(self.loads[worker], int(r["model_loads"]))
        self.tokens[worker] += int(r["tokens"])
        self.seconds[worker] += float(r["seconds"])
        outcome = Outcome.from_json(str(r["outcome"]))
        if outcome.embedded:
            self.devices.add(str(r["device"]))
        self.report.add(outcome)
        pending.embedded += sum(outcome.embedded.values())
        pending.failed += len(outcome.failed)
        pending.units -= 1
        if pending.units == 0:
            self.close(pending)

    def close(self, pending: _Open) -> None:
        """The slice's commit: its fragments and its replaced documents' deletion, keyed
        by the run and the slice (a replay of it is skipped)."""
        del self.open[pending.key]
        if pending.fragments or pending.replaced:
            self.stats.add_commit(
                self.store.commit_fragments(
                    "embeddings",
                    pending.fragments,
                    docs_filter(pending.replaced) if pending.replaced else None,
                    f"{self.run_key}:{pending.key}",
                    pending.read_version,
                )
            )
        self.stats.fragments += len(pending.fragments)
        self.report.chunks_reused += pending.wanted - pending.embedded - pending.failed
        if pending.damaged and self.card is not None:
            self.report.vectors_repaired += count_repaired(self.store, self.card, pending.damaged)

    def finish(self) -> None:
        stats = self.stats
        stats.worker_processes = len(self.loads)
        stats.model_loads = sum(self.loads.values())
        stats.tokens = sum(self.tokens.values())
        stats.devices = sorted(self.devices)
        stats.tokens_per_s_per_worker = {
            w: round(self.tokens[w] / self.seconds[w], 1)
            for w in self.tokens
            if self.seconds[w] > 0 and self.tokens[w]
        }
