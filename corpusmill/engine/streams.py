"""Forward streams on a CPU: one batch per core at a time instead of one batch over all cores.

torch runs each op on its intra-op OpenMP threads and joins them at the op's end. On the
2-core machine, under the PASSIVE wait policy corpusmill sets (a spinning worker costs 2-3x
when other work shares the cores), every op puts the second thread to sleep and wakes it
for the next: a 12 x 200 x 32 attention product took 1.5-3 ms on two threads against 0.12
ms on one (`python -m bench.engine_profile --ops`). So on a CPU the engine runs the forward
on `streams` threads, each with its own small number of intra-op threads (one on 2 cores),
each taking whole batches from the same queue: no join between ops, every core busy with
its own batch, the same rows.

`start` sets the threads' intra-op count. torch keeps that count per thread (OpenMP's
per-thread setting) but remembers the last value set as the default for threads that have
not run a parallel op yet, so `start` restores the caller's count once its workers have
set theirs, under a lock: the caller and threads started later keep their own count.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

_lock = threading.Lock()


def start(count: int, threads_each: int, target: Callable[[int], None]) -> list[threading.Thread]:
    """Start `count` daemon threads running `target(i)`, each with `threads_each` intra-op
    threads for its torch ops; returns them started. The caller joins them."""
    import torch

    ready = threading.Barrier(count + 1)

    def run(i: int) -> None:
        torch.get_num_threads()  # this thread's first use: takes the process's count...
        torch.set_num_threads(threads_each)  # ...then its own
        ready.wait()
        target(i)

    with _lock:
        before = torch.get_num_threads()
        workers = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
        try:
            for w in workers:
                w.start()
            ready.wait()
        except BaseException:
            ready.abort()  # a worker that did start gets BrokenBarrierError and ends
            raise
        finally:
            torch.set_num_threads(before)
    return workers


def run_on_thread(threads: int, fn: Callable[[], object]) -> object:
    """`fn()` on a new thread with `threads` intra-op threads (what one stream sees);
    its result, or its exception raised here."""
    out: list = []
    errors: list[BaseException] = []

    def target(_i: int) -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # surfaced in the caller
            errors.append(exc)

    (worker,) = start(1, threads, target)
    worker.join()
    if errors:
        raise errors[0]
    return out[0]
