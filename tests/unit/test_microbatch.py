"""The micro-batcher (app/microbatch.py) with a FAKE encoder: deterministic vectors from a
hash of the text, a count of its calls, and a gate that holds a forward open so a test can
decide what is queued while it runs. Not a model: batching logic only."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time

import numpy as np
import pytest

from app.microbatch import MicroBatcher


class FakeTextEncoder:
    """FAKE ENCODER: text -> 4 floats from its sha256; records each batch it is given."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_on = fail_on

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        self.entered.set()
        self.gate.wait(10)
        if self.fail_on in texts:
            raise RuntimeError(f"cannot encode {self.fail_on!r}")
        return np.stack([vector_of(t) for t in texts])


def vector_of(text: str) -> np.ndarray:
    digest = hashlib.sha256(text.encode()).digest()
    return np.frombuffer(digest[:16], dtype=np.uint32).astype(np.float32) / 2**32


@pytest.fixture
def encoder():
    return FakeTextEncoder()


def test_requests_queued_during_a_forward_share_the_next_one(encoder):
    batcher = MicroBatcher(encoder, max_wait_s=0.0, max_batch=64)
    encoder.gate.clear()
    first = batcher.submit("first")
    assert encoder.entered.wait(5)  # the worker is inside the first forward, held open
    rest = [batcher.submit(f"q{i}") for i in range(20)]
    encoder.gate.set()
    assert np.array_equal(first.result(5), vector_of("first"))
    for i, fut in enumerate(rest):
        assert np.array_equal(fut.result(5), vector_of(f"q{i}"))  # each gets its own row
    assert encoder.calls == [["first"], [f"q{i}" for i in range(20)]]
    batcher.close()


def test_max_batch_caps_a_forward_and_one_turns_batching_off(encoder):
    batcher = MicroBatcher(encoder, max_wait_s=0.0, max_batch=8)
    encoder.gate.clear()
    batcher.submit("hold")
    assert encoder.entered.wait(5)
    futures = [batcher.submit(f"q{i}") for i in range(20)]
    encoder.gate.set()
    [f.result(5) for f in futures]
    assert [len(c) for c in encoder.calls] == [1, 8, 8, 4]
    batcher.close()

    single = FakeTextEncoder()
    unbatched = MicroBatcher(single, max_wait_s=0.05, max_batch=1)
    futures = [unbatched.submit(f"q{i}") for i in range(5)]
    [f.result(5) for f in futures]
    assert [len(c) for c in single.calls] == [1] * 5
    unbatched.close()


def busy(batcher: MicroBatcher, encoder: FakeTextEncoder) -> None:
    """Make the batcher see concurrent traffic: one forward of two queries."""
    encoder.gate.clear()
    hold = batcher.submit("hold")
    assert encoder.entered.wait(5)
    pair = [batcher.submit("p1"), batcher.submit("p2")]
    encoder.gate.set()
    [f.result(5) for f in [hold, *pair]]
    encoder.calls.clear()


def test_under_concurrent_traffic_the_wait_gathers_requests_that_arrive_together(encoder):
    # A long wait (1 s) so the test does not depend on the machine's speed: five requests
    # submitted back to back all land in one batch.
    batcher = MicroBatcher(encoder, max_wait_s=1.0, max_batch=5)
    busy(batcher, encoder)
    futures = [batcher.submit(f"q{i}") for i in range(5)]
    [f.result(5) for f in futures]
    assert encoder.calls == [[f"q{i}" for i in range(5)]]  # max_batch reached: no more wait
    batcher.close()


def test_an_idle_batcher_does_not_make_a_lone_request_wait(encoder):
    batcher = MicroBatcher(encoder, max_wait_s=1.0, max_batch=64)
    for i in range(3):  # a single sequential client
        t0 = time.monotonic()
        batcher.submit(f"alone{i}").result(5)
        assert time.monotonic() - t0 < 0.5  # far below the 1 s wait
    busy(batcher, encoder)
    t0 = time.monotonic()
    batcher.submit("after a burst").result(5)
    assert time.monotonic() - t0 >= 0.9  # concurrent traffic seen: this one waited
    assert encoder.calls == [["after a burst"]]
    batcher.close()


def test_a_failed_forward_fails_its_batch_only(encoder):
    encoder.fail_on = "bad"
    batcher = MicroBatcher(encoder, max_wait_s=0.0, max_batch=64)
    encoder.gate.clear()
    batcher.submit("hold")
    assert encoder.entered.wait(5)
    doomed = [batcher.submit("bad"), batcher.submit("fine")]
    encoder.gate.set()
    for fut in doomed:
        with pytest.raises(RuntimeError, match="bad"):
            fut.result(5)
    assert np.array_equal(batcher.submit("after").result(5), vector_of("after"))
    batcher.close()


def test_embed_from_asyncio_with_many_concurrent_callers(encoder):
    batcher = MicroBatcher(encoder, max_wait_s=0.002, max_batch=64)

    async def many():
        return await asyncio.gather(*(batcher.embed(f"q{i}") for i in range(200)))

    rows = asyncio.run(many())
    for i, row in enumerate(rows):
        assert np.array_equal(row, vector_of(f"q{i}"))
    assert sum(batcher.batch_sizes) == 200 and len(encoder.calls) < 200
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit("late")
