"""Waiting on a condition, not on the clock: poll until it holds (a deadline only bounds a
failure), and see which threads of this process are blocked on a store's lock files.

A test that holds the store lock and must show that another writer does not write cannot
prove it by sleeping "long enough": on a slow machine the writer may not have got that
far, and the test passes with a broken lock. The kernel knows better: /proc/locks lists
every blocked flock request (`->`), with the waiting process and the file's inode. Once
one of this process's threads waits on a file under `<store>/.locks/`, the writer provably
reached the lock before writing anything, and nothing it does after can happen until the
test lets go.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_DEVICE_INODE = re.compile(r"^([0-9a-f]+):([0-9a-f]+):(\d+)$")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, every: float = 0.05) -> T:
    """`predicate()` once it is truthy; AssertionError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def lock_waiters(store_dir: str | os.PathLike, pid: int | None = None) -> list[str]:
    """Names of the lock files under `store_dir/.locks` that a thread of process `pid`
    (this one by default) is blocked on, according to /proc/locks (Linux)."""
    pid = os.getpid() if pid is None else pid
    files: dict[tuple[int, int, int], str] = {}
    for path in (Path(store_dir) / ".locks").glob("*.lock"):
        st = path.stat()
        files[(os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)] = path.name
    waiting = []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" not in fields or str(pid) not in fields:
            continue
        for field in fields:
            m = _DEVICE_INODE.match(field)
            key = m and (int(m.group(1), 16), int(m.group(2), 16), int(m.group(3)))
            if key and key in files:
                waiting.append(files[key])
    return waiting
