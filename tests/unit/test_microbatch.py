"""The micro-batcher (corpusmill/engine/microbatch.py) with a FAKE encoder and a hand-moved
clock. The encoder gives deterministic vectors from a hash of the text, records its calls,
and has a gate that holds a forward open so a test can decide what is queued while it
runs. The clock stands still until a test moves it, and says when the worker is waiting
on it: no test here sleeps or reads the time. Not a model: batching logic only (the last
test builds the batcher the service uses, from a tiny real model)."""

from __future__ import annotations

import asyncio
import hashlib
import threading

import numpy as np
import pytest

from corpusmill.engine.microbatch import MicroBatcher


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
        assert self.gate.wait(10), "the test never opened the gate"
        if self.fail_on in texts:
            raise RuntimeError(f"cannot encode {self.fail_on!r}")
        return np.stack([vector_of(t) for t in texts])


def vector_of(text: str) -> np.ndarray:
    digest = hashlib.sha256(text.encode()).digest()
    return np.frombuffer(digest[:16], dtype=np.uint32).astype(np.float32) / 2**32


class ManualClock:
    """A clock that moves only when `advance` is called. The batcher's timed wait becomes a
    wait for a notification (a request, a close, or `advance`), and each one is counted, so
    a test can wait until the worker is waiting on the clock."""

    def __init__(self) -> None:
        self.t = 0.0
        self.waits = 0
        self._counted = threading.Condition()
        self._waiting_on: set[threading.Condition] = set()

    def now(self) -> float:
        return self.t

    def wait(self, changed: threading.Condition, timeout: float) -> None:
        self._waiting_on.add(changed)
        with self._counted:
            self.waits += 1
            self._counted.notify_all()
        changed.wait()  # `changed` is held: nothing can notify it before this releases it

    def until_waits(self, n: int) -> None:
        with self._counted:
            assert self._counted.wait_for(lambda: self.waits >= n, 10), (
                f"the worker never waited on the clock a {n}th time (waits={self.waits})"
            )

    def advance(self, seconds: float) -> None:
        self.t += seconds
        for changed in list(self._waiting_on):
            with changed:
                changed.notify_all()


@pytest.fixture
def encoder():
    return FakeTextEncoder()


@pytest.fixture
def clock():
    return ManualClock()


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


def test_max_batch_caps_a_forward_and_one_turns_batching_off(encoder, clock):
    batcher = MicroBatcher(encoder, max_wait_s=0.0, max_batch=8)
    encoder.gate.clear()
    batcher.submit("hold")
    assert encoder.entered.wait(5)
    futures = [batcher.submit(f"q{i}") for i in range(20)]
    encoder.gate.set()
    [f.result(5) for f in futures]
    assert [len(c) for c in encoder.calls] == [1, 8, 8, 4]
    batcher.close()

    # A batch of one is full at once: even with a wait set and queries queued behind it,
    # nothing waits (the clock never moves here) and each query has its own forward.
    single = FakeTextEncoder()
    single.gate.clear()
    unbatched = MicroBatcher(single, max_wait_s=60.0, max_batch=1, clock=clock)
    futures = [unbatched.submit(f"q{i}") for i in range(5)]
    single.gate.set()
    [f.result(5) for f in futures]
    assert [len(c) for c in single.calls] == [1] * 5 and clock.waits == 0
    unbatched.close()


def busy(batcher: MicroBatcher, encoder: FakeTextEncoder) -> None:
    """Make the batcher see concurrent traffic: one forward of two queries."""
    encoder.gate.clear()
    encoder.entered.clear()
    hold = batcher.submit("hold")
    assert encoder.entered.wait(5)
    pair = [batcher.submit("p1"), batcher.submit("p2")]
    encoder.gate.set()
    [f.result(5) for f in [hold, *pair]]
    assert encoder.calls[-1] == ["p1", "p2"]
    encoder.calls.clear()


def test_under_concurrent_traffic_the_wait_gathers_requests_that_arrive_apart(encoder, clock):
    batcher = MicroBatcher(encoder, max_wait_s=1.0, max_batch=5, clock=clock)
    busy(batcher, encoder)
    futures = [batcher.submit("q0")]
    for i in range(1, 5):  # each arrives while the worker waits for company
        clock.until_waits(i)
        futures.append(batcher.submit(f"q{i}"))
    [f.result(5) for f in futures]
    # max_batch reached: the forward ran without the clock moving, all five in it.
    assert encoder.calls == [[f"q{i}" for i in range(5)]] and clock.t == 0.0
    batcher.close()


def test_a_lone_request_waits_only_after_concurrent_traffic_and_until_its_deadline(encoder, clock):
    batcher = MicroBatcher(encoder, max_wait_s=1.0, max_batch=64, clock=clock)
    for i in range(3):  # a single sequential client: answered while the clock stands still
        assert np.array_equal(batcher.submit(f"alone{i}").result(5), vector_of(f"alone{i}"))
    assert clock.waits == 0
    busy(batcher, encoder)

    late = batcher.submit("after a burst")
    clock.until_waits(1)  # the worker holds it, waiting for company
    clock.advance(0.6)
    clock.until_waits(2)  # 0.4 s of its 1 s left: it waits on
    assert encoder.calls == [] and not late.done()
    clock.advance(0.4)  # its deadline, counted from its arrival
    assert np.array_equal(late.result(5), vector_of("after a burst"))
    assert encoder.calls == [["after a burst"]]
    batcher.close()


def test_the_deadline_counts_from_arrival_not_from_when_the_worker_gets_to_it(encoder, clock):
    batcher = MicroBatcher(encoder, max_wait_s=1.0, max_batch=64, clock=clock)
    busy(batcher, encoder)
    encoder.gate.clear()
    encoder.entered.clear()
    pair = [batcher.submit("x")]
    clock.until_waits(1)
    pair.append(batcher.submit("y"))
    clock.until_waits(2)
    clock.advance(1.0)  # x's deadline: [x, y] goes into a forward, held open
    assert encoder.entered.wait(5)
    z = batcher.submit("z")  # arrives at t=1.0, during that forward
    clock.advance(0.7)
    encoder.gate.set()
    [f.result(5) for f in pair]
    clock.until_waits(3)  # traffic was concurrent: z waits, for what is left of its 1 s
    clock.advance(0.3)
    assert np.array_equal(z.result(5), vector_of("z"))
    assert encoder.calls == [["x", "y"], ["z"]]
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
    batcher = MicroBatcher(encoder, max_wait_s=0.0, max_batch=64)
    encoder.gate.clear()

    async def many():
        tasks = [asyncio.ensure_future(batcher.embed(f"q{i}")) for i in range(200)]
        await asyncio.sleep(0)  # every task has submitted; the first forward is held
        encoder.gate.set()
        return await asyncio.gather(*tasks)

    rows = asyncio.run(many())
    for i, row in enumerate(rows):
        assert np.array_equal(row, vector_of(f"q{i}"))
    assert sum(batcher.batch_sizes) == 200 and len(encoder.calls) <= 1 + -(-199 // 64)
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit("late")


def test_close_finishes_what_is_queued(encoder, clock):
    batcher = MicroBatcher(encoder, max_wait_s=60.0, max_batch=64, clock=clock)
    encoder.gate.clear()
    futures = [batcher.submit("hold")]
    assert encoder.entered.wait(5)
    futures += [batcher.submit(f"q{i}") for i in range(3)]
    closing = threading.Thread(target=batcher.close)
    closing.start()
    encoder.gate.set()
    closing.join(10)
    assert not closing.is_alive()
    assert [f.result(0) is not None for f in futures] == [True] * 4  # done, none waited
    assert encoder.calls == [["hold"], ["q0", "q1", "q2"]]


def test_the_model_gives_the_service_its_batcher_and_closes_it_on_release(tiny_embedder_path):
    from corpusmill.model import Model, ModelSpec

    model = Model(ModelSpec(path=str(tiny_embedder_path), dtype="float32")).load()
    batcher = model.micro_batcher(max_wait_s=0.0, max_batch=8)
    for text in ["a query", "another, longer query about micro-batches"]:
        row = batcher.submit(text).result(30)  # alone in its forward: as `embed` alone
        np.testing.assert_array_equal(row, model.embed([text])[0])
    model.release()
    assert batcher.closed
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit("after release")


def test_a_request_of_many_texts_queues_them_together_and_reports_each_forward(encoder):
    """`submit_many` (the /v1/embeddings route): one request's texts queued in order, shared
    with whatever else is queued; `pending` is the queue's depth; `on_batch` hears each
    forward's size; a future cancelled before its forward is left out of it."""
    sizes: list[int] = []
    batcher = MicroBatcher(encoder, max_wait_s=0.0, max_batch=4, on_batch=sizes.append)
    encoder.gate.clear()
    batcher.submit("hold")
    assert encoder.entered.wait(5)
    mine = batcher.submit_many([f"m{i}" for i in range(6)])
    other = batcher.submit("other")
    assert batcher.pending == 7
    assert mine[5].cancel()  # its client went away before any forward took it
    encoder.gate.set()
    for i, fut in enumerate(mine[:5]):
        assert np.array_equal(fut.result(5), vector_of(f"m{i}"))
    assert np.array_equal(other.result(5), vector_of("other"))
    assert encoder.calls == [["hold"], ["m0", "m1", "m2", "m3"], ["m4", "other"]]
    assert sizes == [1, 4, 2] and batcher.pending == 0
    assert batcher.stats()["queries"] == 7 and batcher.stats()["batches"] == 3
    batcher.close()


def test_embed_many_from_asyncio(encoder):
    batcher = MicroBatcher(encoder, max_wait_s=0.0, max_batch=3)
    rows = asyncio.run(batcher.embed_many([f"t{i}" for i in range(7)]))
    assert [r.tolist() for r in rows] == [vector_of(f"t{i}").tolist() for i in range(7)]
    batcher.close()


def test_the_size_history_is_bounded_and_the_totals_are_not(encoder):
    from corpusmill.engine.microbatch import RECENT_BATCHES

    batcher = MicroBatcher(encoder, max_wait_s=0.0, max_batch=1)
    futures = batcher.submit_many([f"t{i}" for i in range(RECENT_BATCHES + 10)])
    [f.result(10) for f in futures]
    assert len(batcher.batch_sizes) == RECENT_BATCHES
    assert batcher.stats()["batches"] == RECENT_BATCHES + 10
    batcher.close()


def test_the_service_hands_the_engine_token_ids_and_gets_the_texts_rows(tiny_embedder_path):
    """Inputs the service tokenised itself (TokenIds) embed as their text does."""
    from corpusmill.engine.inputs import TokenIds
    from corpusmill.model import Model, ModelSpec

    model = Model(ModelSpec(path=str(tiny_embedder_path), dtype="float32")).load()
    texts = ["a query", "another, longer query about micro-batches"]
    ids = [TokenIds(t["input_ids"]) for t in model.tokens.tokenize(texts, truncate=False)]
    batcher = model.micro_batcher(max_wait_s=0.0, max_batch=8)
    rows = [f.result(30) for f in batcher.submit_many([ids[0], texts[1], ids[1]])]
    want = model.embed(texts)
    np.testing.assert_allclose(rows, [want[0], want[1], want[1]], atol=1e-6)
    long = " ".join(["word"] * 200)
    assert len(model.tokens.tokenize([long], truncate=False)[0]["input_ids"]) == 202
    assert len(model.tokens.tokenize([long])[0]["input_ids"]) == model.max_seq_length
    batcher.close()
