"""A writer's lock on a local store: one writer per store directory on this machine.

Re-entrant per thread: flock on a second descriptor of the same file blocks even in the
process that holds it, so a nested lock (an asset holding it calls the Searcher, whose
first full-text query builds the index) would otherwise deadlock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

_held_locks = threading.local()


@contextlib.contextmanager
def file_lock(directory: str, name: str = "store") -> Iterator[None]:
    """Hold `<directory>/.locks/<name>.lock` exclusively for the block."""
    lock_dir = Path(directory) / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = str((lock_dir / f"{name}.lock").resolve())
    held = _held_locks.__dict__.setdefault("paths", set())
    if path in held:
        yield
        return
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        held.add(path)
        yield
    finally:
        held.discard(path)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
