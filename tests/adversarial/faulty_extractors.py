"""Extractors that misbehave on purpose, run in the real worker process by
tests/adversarial/test_readers_hostile.py (called as `function(data, limits)`)."""

from __future__ import annotations

import os
import signal
import threading

from corpusmill.sources import Extracted


def echo(data: bytes, limits) -> Extracted:
    return Extracted(text=data.decode())


def hang(data: bytes, limits) -> Extracted:
    threading.Event().wait()  # never set: only the parent's time limit ends this
    raise AssertionError("unreachable")


def allocate(data: bytes, limits) -> Extracted:
    hoard = [bytearray(64 * 2**20) for _ in range(10_000)]  # 640 GB: past any limit
    return Extracted(text=str(len(hoard)))


def crash(data: bytes, limits) -> Extracted:
    os.kill(os.getpid(), signal.SIGSEGV)
    raise AssertionError("unreachable")


def recurse(data: bytes, limits) -> Extracted:
    def down(n: int) -> int:
        return down(n + 1) + 1

    return Extracted(text=str(down(0)))


def parent(data: bytes, limits) -> Extracted:
    """The pid of the process that started this worker."""
    return Extracted(text=str(os.getppid()))
