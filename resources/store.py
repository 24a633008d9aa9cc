"""The LanceDB store as a Dagster resource: just the URI, so any worker can open it."""

import dagster as dg

from corpusmill.settings import Settings
from corpusmill.store import Store


class LanceStoreResource(dg.ConfigurableResource):
    """A LanceDB database: a local directory by default, any URI lancedb accepts."""

    uri: str = Settings.from_env().db

    def store(self) -> Store:
        return Store(self.uri)
