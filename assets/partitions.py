"""The one partitioning scheme: 16 stable hash shards of the document id.

A document's shard never changes (blake2b of its id), so one run can stream every shard
through one resident model (single-run backfills), several workers can take disjoint
shards, and an incremental ingest touches only the shards of the files that changed.
See docs/DESIGN.md for why not time or source partitions.
"""

import warnings
from collections.abc import Sequence

import dagster as dg

from corpusmill.ids import ALL_PARTITIONS

shards = dg.StaticPartitionsDefinition(ALL_PARTITIONS)

# Every model-bound asset runs all requested shards in one step: one model load per run.
one_run = dg.BackfillPolicy.single_run()

# Dagster 1.13 marks the `backfill_policy` parameter beta and warns at every decoration,
# in every process that loads the definitions (4 lines per run in `make dev`). We depend on
# it by design (one model load per run) and pin dagster, so that one warning is silenced
# here, where the assets that use it import `one_run`; every other warning still shows.
warnings.filterwarnings(
    "ignore",
    message=r"Parameter `backfill_policy` of function `asset` is currently in beta",
    category=dg.BetaWarning,
)

# Writers of the store queue on this pool (limit 1 in dagster.yaml), so two runs that
# touch the same tables never interleave their commits.
STORE_POOL = "corpusmill_store"

# A single-run backfill over shards[first..last]: the tags Dagster reads for it.
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def partition_range_tags(partitions: Sequence[str]) -> dict[str, str]:
    """Tags that make one run cover the shards from the first to the last of `partitions`."""
    ordered = sorted(partitions, key=ALL_PARTITIONS.index)
    return {RANGE_START: ordered[0], RANGE_END: ordered[-1]}
