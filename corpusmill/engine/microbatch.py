"""Micro-batching: texts that arrive one at a time share one engine call.

The query service gets one query per request, from many clients at once. A `MicroBatcher`
sits in front of the model's `embed` (the service asks the model for one:
`Model.micro_batcher`), so the layering is infinity's: server -> engine (this queue, then
the batch engine) -> model forward, and a service request reaches the forward the way a
CLI batch does, through `BatchEngine`.

One worker thread calls `encode`. A request joins a queue and waits on a future; the worker
takes the oldest text, gathers whatever else arrives until that text has waited
`max_wait_s` (or `max_batch` texts are in hand), runs ONE `encode(texts)` call and hands
each request its own row. While a forward runs, new requests pile up in the queue and the
next batch takes them all at once, with no further wait (the deadline counts from the
oldest request's arrival, not from when the worker got to it). So under load the batch
grows with the load, like the batch engine, instead of one forward per request.

Why the wait is short (DEFAULT_WAIT_S, 2 ms): a MiniLM forward of one query takes ~7-9 ms
on the 2-core CPU it was measured on (3.1 ms a query in a batch of 32), so 2 ms keeps the
added latency a fraction of a forward while catching requests that arrive together. And the
wait is only taken when traffic is concurrent: after a forward of one query with nothing
queued, the next lone query goes straight through (a single sequential client never waits;
on a busy box a 2 ms sleep costs more than 2 ms, measured ~5 ms at p50). Under sustained
load the wait hardly matters: requests arriving during a forward are batched anyway.
`max_wait_s=0` or `max_batch=1` turns the gathering off.

Time comes from a `Clock` (`now`, and a timed wait on the queue's condition), so a test
can hold time still and move it by hand instead of sleeping. Pure threading and asyncio;
no model, no HTTP: tests drive it with a fake encoder.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

DEFAULT_WAIT_S = 0.002
DEFAULT_MAX_BATCH = 32  # measured: 3.1 ms/query at 32 in one forward, 5.3 at 64 (padding)

Encode = Callable[[list[str]], np.ndarray]


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale."""
        ...

    def wait(self, changed: threading.Condition, timeout: float) -> None:
        """Block on `changed` (held by the caller) until it is notified or `timeout`
        seconds have passed on this clock."""
        ...


class MonotonicClock:
    """The real one: `time.monotonic` and `Condition.wait`."""

    def now(self) -> float:
        return time.monotonic()

    def wait(self, changed: threading.Condition, timeout: float) -> None:
        changed.wait(timeout)


@dataclass
class _Request:
    text: str
    arrived: float
    future: Future = field(default_factory=Future)


class MicroBatcher:
    """`await batcher.embed(text)` from any event loop, or `batcher.submit(text).result()`
    from any thread; `encode` is only ever called from the worker thread."""

    def __init__(
        self,
        encode: Encode,
        *,
        max_wait_s: float = DEFAULT_WAIT_S,
        max_batch: int = DEFAULT_MAX_BATCH,
        clock: Clock | None = None,
    ) -> None:
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch={max_batch} must be >= 1, max_wait_s={max_wait_s} >= 0")
        self.encode = encode
        self.max_wait_s = max_wait_s
        self.max_batch = max_batch
        self.clock: Clock = clock or MonotonicClock()
        self.batch_sizes: list[int] = []  # one entry per encode call, for stats and tests
        self._concurrent = False  # did the last forward carry more than one query?
        self._queue: deque[_Request] = deque()
        self._changed = threading.Condition()  # a request arrived, or the batcher closed
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="microbatch", daemon=True)
        self._thread.start()

    # -- callers --------------------------------------------------------------------------
    def submit(self, text: str) -> Future:
        """A future for `text`'s row (a 1-D float32 array)."""
        with self._changed:
            if self._closed:
                raise RuntimeError("the micro-batcher is closed")
            request = _Request(text, self.clock.now())
            self._queue.append(request)
            self._changed.notify_all()
        return request.future

    async def embed(self, text: str) -> np.ndarray:
        return await asyncio.wrap_future(self.submit(text))

    def close(self, timeout: float = 10.0) -> None:
        """Finish what is queued, then stop the worker."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join(timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> dict[str, float]:
        return batch_stats(list(self.batch_sizes), self.max_wait_s, self.max_batch)

    # -- worker ---------------------------------------------------------------------------
    def _loop(self) -> None:
        while (batch := self._gather()) is not None:
            self._run(batch)

    def _gather(self) -> list[_Request] | None:
        """The next batch; None once closed with nothing left queued."""
        with self._changed:
            while not self._queue:
                if self._closed:
                    return None
                self._changed.wait()
            first = self._queue.popleft()
            batch = [first]
            # Idle (the last forward had one query): no wait, only what is queued already.
            deadline = first.arrived + (self.max_wait_s if self._concurrent else 0.0)
            while len(batch) < self.max_batch:
                # Already-queued requests are taken even past the deadline: they cost
                # nothing to add, and leaving them would cost them a whole forward.
                if self._queue:
                    batch.append(self._queue.popleft())
                    continue
                left = deadline - self.clock.now()
                if left <= 0 or self._closed:
                    break
                self.clock.wait(self._changed, left)
            return batch

    def _run(self, batch: Sequence[_Request]) -> None:
        live = [r for r in batch if r.future.set_running_or_notify_cancel()]
        self._concurrent = len(batch) > 1
        if not live:
            return
        self.batch_sizes.append(len(live))
        try:
            rows = np.asarray(self.encode([r.text for r in live]))
            if len(rows) != len(live):
                raise RuntimeError(f"encode returned {len(rows)} rows for {len(live)} texts")
        except BaseException as exc:  # every waiter hears of it; the worker carries on
            for r in live:
                r.future.set_exception(exc)
            return
        for r, row in zip(live, rows, strict=True):
            r.future.set_result(row)


def batch_stats(sizes: Sequence[int], max_wait_s: float, max_batch: int) -> dict[str, float]:
    """What `/health` reports of one or several batchers: forwards, queries, batch sizes."""
    return {
        "batches": len(sizes),
        "queries": sum(sizes),
        "mean_batch": round(sum(sizes) / len(sizes), 2) if sizes else 0.0,
        "max_batch_seen": max(sizes, default=0),
        "max_wait_ms": max_wait_s * 1000,
        "max_batch": max_batch,
    }
