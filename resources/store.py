"""The LanceDB store as a Dagster resource: just the URI, so any worker can open it."""

import dagster as dg

from corpusmill.store import Store


class LanceStoreResource(dg.ConfigurableResource):
    """A LanceDB database: a local directory by default, any URI lancedb accepts."""

    uri: str = "./data/lancedb"

    def store(self) -> Store:
        return Store(self.uri)
