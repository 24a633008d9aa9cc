"""Truthful metadata for the shard-partitioned assets: run figures labelled, shard counts per shard.

One run materialises many shards (single-run backfill), and Dagster 1.13 copies the step's
materialisation metadata onto every shard's materialisation: there is no public way to give
each partition its own (dagster-io/dagster#18123 and #34013 are open; `MaterializeResult`
has no partition argument). So:
  - the materialisation carries run-level figures, each key prefixed `run_` so nobody reads
    a run total as a shard's count (`run_partitions` says how many shards shared it);
  - each shard's own counts go into an `AssetObservation` of that partition, which the UI
    lists and plots per partition.

`write_shards` is the one ending every shard-partitioned asset shares: write under the
shards' lock, observe each shard, label the run's figures, add the table's version. The
model-bound assets reach it through `write_generations`, which syncs every generation the
run serves (`corpusmill.lifecycle.targets`) inside that lock and reports the configured
model's generation as the shards' counts (the code version names that model), the others
as run figures.
"""

import contextlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, TypeVar

import dagster as dg

from assets.partitions import TRIGGER_TAG
from corpusmill.chunking import chunker_version
from corpusmill.config import Settings
from corpusmill.errors import ShardsBusy
from corpusmill.lifecycle.targets import CONFIGURED, Target, register_configured, run_targets
from corpusmill.model.pool import ModelPool
from corpusmill.store import Store

RUN_PREFIX = "run_"


class _Report(Protocol):
    def as_metadata(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=_Report)


def run_level(meta: Mapping[str, Any], keys: Iterable[str] | None = None) -> dict[str, Any]:
    """`meta` with `keys` (default: all) renamed `run_<key>`; other keys unchanged."""
    chosen = set(meta) if keys is None else set(keys)
    return {(f"{RUN_PREFIX}{k}" if k in chosen else k): v for k, v in meta.items()}


SAMPLE = 20  # quarantined items named in a run's log and metadata


def quarantine_sample(context: dg.AssetExecutionContext, items: Iterable[Any]) -> dg.MetadataValue:
    """The first quarantined items of a step (`Quarantined`: uri and reason) logged as
    warnings and returned as the `quarantine_sample` metadata value."""
    first = list(items)[:SAMPLE]
    for q in first:
        context.log.warning(f"quarantined {q.uri}: {q.reason}")
    return dg.MetadataValue.md("\n".join(f"- `{q.uri}`: {q.reason}" for q in first) or "none")


def observe_shards(
    context: dg.AssetExecutionContext, per_shard: Mapping[str, Mapping[str, int]]
) -> int:
    """Log one observation per shard with that shard's counts; returns how many."""
    for shard, counts in per_shard.items():
        context.log_event(
            dg.AssetObservation(
                asset_key=context.asset_key,
                partition=shard,
                metadata={k: int(v) for k, v in counts.items()},
                description="this shard's own counts (the materialisation's are run-level)",
            )
        )
    return len(per_shard)


def write_shards(
    context: dg.AssetExecutionContext,
    db: Store,
    table: str,
    sync: Callable[[], R],
    *,
    sum_column: str | None = None,
    per_shard: Callable[[R], Mapping[str, Mapping[str, int]]] | None = None,
    not_run_level: Iterable[str] = (),
    lock: bool = True,
) -> tuple[R, dict[str, Any]]:
    """Run `sync` (which writes `table` for the run's shards) under those shards' write
    lock, then report it: each shard's own counts, read back from `table` after the write
    (rows, documents, the sum of `sum_column`, and any `per_shard(report)` figures: name
    -> shard -> count), as an observation of that shard; the report's figures as run-level
    metadata (`run_` prefix, except the keys in `not_run_level`); the table's version and
    the number of shards the run covered. Returns the report and that metadata. `lock`
    False: `sync` takes the locks it needs itself (`write_generations`)."""
    from corpusmill.sync.shards import merge_counts, shard_counts

    shards = context.partition_keys
    with db.write_lock(shards) if lock else contextlib.nullcontext():
        report = sync()
    counts = shard_counts(db, table, shards, sum_column=sum_column)
    for name, values in (per_shard(report) if per_shard else {}).items():
        merge_counts(counts, name, values)
    observe_shards(context, counts)
    figures = report.as_metadata()
    kept = set(not_run_level)
    meta = run_level(figures, [k for k in figures if k not in kept])
    meta["table_version"] = db.version(table)
    meta["run_partitions"] = len(shards)
    return report, meta


def write_generations(
    context: dg.AssetExecutionContext,
    store: Store,
    models: ModelPool,
    settings: Settings,
    table: str,
    step: Callable[[Target, list[Target]], R],
    empty: Callable[[], R],
    **kwargs: Any,
) -> tuple[R, dict[str, Any]]:
    """`write_shards` over every generation the run serves: `step(target, synced)` syncs
    one (`synced`: the generations synced before it in this step, which it may copy
    from), under that generation's shard locks, live first and the configured model's
    last. The
    shards' observations and the run's figures are the configured generation's (`table`
    in its view); each other generation's figures are one JSON entry.

    An inbox run (tagged by the sensor) does not wait for a generation that another run
    is building: it skips it (`deferred_generations`), so a new file reaches the live
    generation at once; the build's generation catches up in a later run, and promotion
    refuses until it has. `empty()` is the report of a generation left alone. `settings`
    (the run's): the chunker a new generation is registered with."""
    chunker = chunker_version(settings.chunk_tokens, settings.chunk_overlap)
    configured = register_configured(store, models.base, chunker)
    inbox_run = TRIGGER_TAG in (context.run.tags or {})
    targets: list[Target] = []
    reports: dict[str, R] = {}
    deferred: list[str] = []

    def sync() -> R:
        targets[:] = run_targets(store, models, chunker)
        for target in targets:
            building = target.roles == (CONFIGURED,)
            wait = not (inbox_run and building)
            try:
                synced = [t for t in targets if t.generation.gen_id in reports]
                with target.store.write_lock(context.partition_keys, wait=wait):
                    reports[target.generation.gen_id] = step(target, synced)
            except ShardsBusy:
                deferred.append(target.generation.gen_id)
                context.log.info(f"{target.label} is being built by another run: left to it")
        return reports.get(configured.gen_id) or empty()

    report, meta = write_shards(context, configured.view(store), table, sync, lock=False, **kwargs)
    meta["generation"] = configured.gen_id
    meta["generations_synced"] = ", ".join(
        t.label for t in targets if t.generation.gen_id in reports
    )
    meta["deferred_generations"] = ", ".join(deferred) or "none"
    others = {
        t.label: reports[t.generation.gen_id].as_metadata()
        for t in targets
        if not t.configured and t.generation.gen_id in reports
    }
    if others:
        meta["other_generations"] = dg.MetadataValue.json(others)
    return report, meta
