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

A request may carry many texts (`submit_many`: the OpenAI-style embeddings route): they are
queued together, in order, and share forwards with everyone else's. An item is a text or
`TokenIds` (already tokenised by the model's own tokenizer, as the service does to count and
check it); the engine takes either. `pending` is the queue's depth and `on_batch(size)`
hears of each forward, for the service's metrics.

Time comes from a `Clock` (`now`, and a timed wait on the queue's condition), so a test
can hold time still and move it by hand instead of sleeping. Pure threading and asyncio;
no model, no HTTP: tests drive it with a fake encoder.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

DEFAULT_WAIT_S = 0.002
DEFAULT_MAX_BATCH = 32  # measured: 3.1 ms/query at 32 in one forward, 5.3 at 64 (padding)
RECENT_BATCHES = 1024  # sizes kept for `batch_sizes`; the totals in `stats` count them all

Encode = Callable[[list[Any]], np.ndarray]  # texts or TokenIds -> one row each


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
    text: Any  # a str, or TokenIds
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
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch={max_batch} must be >= 1, max_wait_s={max_wait_s} >= 0")
        self.encode = encode
        self.max_wait_s = max_wait_s
        self.max_batch = max_batch
        self.clock: Clock = clock or MonotonicClock()
        self.on_batch = on_batch  # called from the worker with each forward's size
        # The latest sizes, one per encode call (bounded: a service runs for months).
        self.batch_sizes: deque[int] = deque(maxlen=RECENT_BATCHES)
        self._batches = self._queries = self._max_seen = 0
        self._concurrent = False  # did the last forward carry more than one query?
        self._queue: deque[_Request] = deque()
        self._changed = threading.Condition()  # a request arrived, or the batcher closed
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="microbatch", daemon=True)
        self._thread.start()

    # -- callers --------------------------------------------------------------------------
    def submit(self, text: Any) -> Future:
        """A future for `text`'s row (a 1-D float32 array)."""
        return self.submit_many([text])[0]

    def submit_many(self, texts: Iterable[Any]) -> list[Future]:
        """One future per text, queued together in this order. A future cancelled before
        its forward starts is dropped from it."""
        with self._changed:
            if self._closed:
                raise RuntimeError("the micro-batcher is closed")
            now = self.clock.now()
            requests = [_Request(t, now) for t in texts]
            self._queue.extend(requests)
            self._changed.notify_all()
        return [r.future for r in requests]

    async def embed(self, text: Any) -> np.ndarray:
        return await asyncio.wrap_future(self.submit(text))

    async def embed_many(self, texts: Sequence[Any]) -> list[np.ndarray]:
        """Rows for `texts`, in order; cancelling the await cancels what has not started."""
        futures = [asyncio.wrap_future(f) for f in self.submit_many(texts)]
        return list(await asyncio.gather(*futures))

    @property
    def pending(self) -> int:
        """Texts queued and not yet in a forward."""
        return len(self._queue)

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
        return batch_stats([self], self.max_wait_s, self.max_batch)

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
        self._batches += 1
        self._queries += len(live)
        self._max_seen = max(self._max_seen, len(live))
        try:
            if self.on_batch is not None:
                self.on_batch(len(live))
            rows = np.asarray(self.encode([r.text for r in live]))
            if len(rows) != len(live):
                raise RuntimeError(f"encode returned {len(rows)} rows for {len(live)} texts")
        except BaseException as exc:  # every waiter hears of it; the worker carries on
            for r in live:
                r.future.set_exception(exc)
            return
        for r, row in zip(live, rows, strict=True):
            r.future.set_result(row)


def batch_stats(
    batchers: Sequence[MicroBatcher], max_wait_s: float, max_batch: int
) -> dict[str, float]:
    """What `/health` reports of one or several batchers: forwards, queries, batch sizes
    (running totals: the size history is bounded)."""
    batches = sum(b._batches for b in batchers)
    queries = sum(b._queries for b in batchers)
    return {
        "batches": batches,
        "queries": queries,
        "mean_batch": round(queries / batches, 2) if batches else 0.0,
        "max_batch_seen": max((b._max_seen for b in batchers), default=0),
        "max_wait_ms": max_wait_s * 1000,
        "max_batch": max_batch,
    }
