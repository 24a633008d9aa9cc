"""Truthful metadata for the shard-partitioned assets: run figures labelled, shard counts per shard.

One run materialises many shards (single-run backfill), and Dagster 1.13 copies the step's
materialisation metadata onto every shard's materialisation: there is no public way to give
each partition its own (dagster-io/dagster#18123 and #34013 are open; `MaterializeResult`
has no partition argument). So:
  - the materialisation carries run-level figures, each key prefixed `run_` so nobody reads
    a run total as a shard's count (`run_partitions` says how many shards shared it);
  - each shard's own counts go into an `AssetObservation` of that partition, which the UI
    lists and plots per partition.
"""

from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg

RUN_PREFIX = "run_"


def run_level(meta: Mapping[str, Any], keys: Iterable[str] | None = None) -> dict[str, Any]:
    """`meta` with `keys` (default: all) renamed `run_<key>`; other keys unchanged."""
    chosen = set(meta) if keys is None else set(keys)
    return {(f"{RUN_PREFIX}{k}" if k in chosen else k): v for k, v in meta.items()}


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
