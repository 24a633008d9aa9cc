"""Writers' locks on a local store: flock files under `<store>/.locks/`, per machine.

`Store.write_lock` takes the store lock exclusive (whole-store work) or shared together
with one exclusive lock per shard (work on some shards), so disjoint shards write at once.

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

from corpusmill.errors import ShardsBusy

_held_locks = threading.local()


@contextlib.contextmanager
def file_lock(
    directory: str, name: str = "store", shared: bool = False, wait: bool = True
) -> Iterator[None]:
    """Hold `<directory>/.locks/<name>.lock` for the block: exclusive, or shared with
    other shared holders. A thread already holding it gets it again at once, unless it
    holds it shared and asks for it exclusive: that upgrade would deadlock against its own
    descriptor, so it is refused with an error. `wait` False: `ShardsBusy` at once if
    another holder has it."""
    lock_dir = Path(directory) / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = str((lock_dir / f"{name}.lock").resolve())
    held: dict[str, bool] = _held_locks.__dict__.setdefault("modes", {})  # path -> shared
    if path in held:
        if held[path] and not shared:
            raise RuntimeError(
                f"this thread holds {name!r} shared (a shard writer) and asked for it "
                "exclusive (a whole-store write): take the whole-store lock first"
            )
        yield
        return
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, mode if wait else mode | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            fd = -1
            raise ShardsBusy(
                f"{name} of the store at {directory!r} is held by another writer"
            ) from None
        held[path] = shared
        yield
    finally:
        if fd >= 0:
            held.pop(path, None)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
