"""The LanceDB store as a Dagster resource: the URI and its storage options, so any worker
can open it."""

import dagster as dg
from pydantic import PrivateAttr

from corpusmill.store import Store


class LanceStoreResource(dg.ConfigurableResource):
    """A LanceDB database: a local directory by default, any URI lancedb accepts."""

    uri: str = "./data/lancedb"
    # object_store options (endpoint, region, credentials, allow_http): CORPUSMILL_STORAGE_OPTIONS
    storage_options: dict[str, str] = {}
    # The run this resource serves: named as the holder of its shard leases on S3.
    _run_id: str = PrivateAttr(default="")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._run_id = context.run_id or ""

    def store(self) -> Store:
        return Store(self.uri, self.storage_options, owner=self._run_id)
