"""The LanceDB store as a Dagster resource: the run's `Store`, at the configured URI with
its storage options, so any worker can open it."""

from collections.abc import Callable

import dagster as dg

from corpusmill.config import Settings
from corpusmill.store import Store


def store_resource(
    settings: Settings, *, on_commit: Callable[[str], None] | None = None
) -> dg.ResourceDefinition:
    """A `Store` per run, named by the run's id as the holder of its shard leases on S3."""

    @dg.resource(description=f"the LanceDB store at {settings.db}")
    def run_store(context: dg.InitResourceContext) -> Store:
        return Store(
            settings.db, settings.storage_options, owner=context.run_id or "", on_commit=on_commit
        )

    return run_store
