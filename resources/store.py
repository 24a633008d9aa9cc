"""The LanceDB store as a Dagster resource: the URI and its storage options, so any worker
can open it."""

import dagster as dg

from corpusmill.store import Store


class LanceStoreResource(dg.ConfigurableResource):
    """A LanceDB database: a local directory by default, any URI lancedb accepts."""

    uri: str = "./data/lancedb"
    # object_store options (endpoint, region, credentials, allow_http): CORPUSMILL_STORAGE_OPTIONS
    storage_options: dict[str, str] = {}

    def store(self) -> Store:
        return Store(self.uri, self.storage_options)
