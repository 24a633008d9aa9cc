"""Ray workers that fail on purpose, injected as the pool's actor class
(`sync_embeddings_on_ray(worker=...)`); production code holds no such hook.

Ray's worker processes import this module by name, so the scenario that uses it starts its
cluster with this checkout on the workers' PYTHONPATH and the marker path in their
environment (`runtime_env`, tests/e2e/ray_scenarios.py).
"""

from __future__ import annotations

import os

from corpusmill.scale.worker import EmbedWorker
from corpusmill.sync.embed_step import ChunkBatch

# The file whose creation claims the one death: set by the scenario for the workers.
DIE_ONCE_MARKER = "CORPUSMILL_TESTS_DIE_ONCE_MARKER"


class DiesOnceWorker(EmbedWorker):
    """SIGKILLs its own process in the middle of a unit, before embedding it, as a machine
    or OOM kill would; only the first worker to claim the marker file dies, and only once
    (Ray restarts the actor and retries the unit)."""

    def _embed(self, batch: ChunkBatch) -> int:
        if batch.todo:
            _die_once(os.environ[DIE_ONCE_MARKER])
        return super()._embed(batch)


def _die_once(marker: str) -> None:
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # another worker (or this one, before its restart) already died once
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os.kill(os.getpid(), 9)
