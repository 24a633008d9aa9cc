"""store_upkeep: compaction, old-version cleanup and index refresh, on a schedule.

It queues on the `corpusmill_store` pool like every writer and also takes the store's
write lock, so it never runs while an ingest or a rerank run (or a CLI ingest outside
Dagster) is committing. See corpusmill/store/upkeep.py for what it does to each table.

(No `from __future__ import annotations` in Dagster modules.)
"""

import dagster as dg

from assets.embeddings import embeddings
from assets.partitions import STORE_POOL
from assets.rerank import rerank_scores
from corpusmill.store import Store
from corpusmill.store.upkeep import ANN_MIN_ROWS


class UpkeepConfig(dg.Config):
    """Versions younger than the grace period are kept, so a reader that opened the
    table a moment ago never finds its files gone."""

    cleanup_older_than_minutes: int = 60
    ann_min_rows: int = ANN_MIN_ROWS  # build the vector index from this many rows
    retrain_ann: bool = False  # rebuild the vector index (after the corpus grew a lot)


@dg.asset(
    deps=[embeddings, rerank_scores],
    pool=STORE_POOL,
    group_name="maintenance",
    kinds={"lancedb"},
)
def store_upkeep(
    context: dg.AssetExecutionContext, config: UpkeepConfig, store: dg.ResourceParam[Store]
) -> dg.MaterializeResult:
    """Compact every table, drop versions past the grace period, build or refresh the
    full-text, filter and (from `ann_min_rows` rows) vector indexes of `embeddings`."""
    import datetime as dt

    from corpusmill.lifecycle.operations import whole_store
    from corpusmill.store.upkeep import upkeep

    with whole_store(store):
        report = upkeep(
            store,
            cleanup_older_than=dt.timedelta(minutes=config.cleanup_older_than_minutes),
            ann_min_rows=config.ann_min_rows,
            retrain_ann=config.retrain_ann,
        )
    for table in report.tables:
        if table.indexes_built:
            context.log.info(f"{table.table}: built {', '.join(table.indexes_built)}")
    return dg.MaterializeResult(metadata=report.as_metadata())


upkeep_job = dg.define_asset_job(
    "upkeep",
    selection=[store_upkeep],
    description="compact tables, clean up old versions, refresh the search indexes",
)

# Nightly, when ingests are rare; the pool makes it wait for any run still writing.
upkeep_schedule = dg.ScheduleDefinition(
    job=upkeep_job,
    cron_schedule="0 3 * * *",
    description="Nightly at 03:00 (the daemon's time zone): compact the tables, drop versions "
    "older than an hour, refresh the search indexes. Waits in the corpusmill_store pool for "
    "any run still writing.",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
