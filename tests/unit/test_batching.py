"""Token-budget batching, order restoration, windows and the OOM back-off.

Uses the labelled FakeHashEncoder (tests/fakes.py): its rows depend only on a text's
tokens, so any mix-up of order shows, and it raises torch.cuda.OutOfMemoryError above a
padded-token budget like a GPU would.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from corpusmill.engine.planner import plan_batches, split_batch
from corpusmill.engine.progress import ProgressMeter
from corpusmill.engine.runner import BatchEngine
from tests.fakes import FakeHashEncoder, FakeLaunchingEncoder


def texts_of_lengths(lengths):
    return [" ".join(f"w{i}x{j}" for j in range(n)) for i, n in enumerate(lengths)]


MIXED = [3, 40, 7, 7, 120, 1, 55, 9, 30, 2, 80, 14, 14, 6, 33, 70, 5, 18, 11, 90]


def test_every_batch_fits_the_padded_token_budget_and_covers_each_input_once():
    lengths = [5, 300, 17, 17, 64, 2, 128, 9, 33, 250, 1, 80]
    plan = plan_batches(lengths, max_batch_tokens=256)
    seen = sorted(i for b in plan.batches for i in b)
    assert seen == list(range(len(lengths)))
    for batch in plan.batches:
        width = max(lengths[i] for i in batch)
        assert len(batch) == 1 or width * len(batch) <= 256
    # 300 and 250 exceed the budget alone: each gets a batch of its own, not an error
    assert [1] in plan.batches and [9] in plan.batches


def test_sorting_by_length_keeps_padding_small():
    rng = np.random.default_rng(0)
    lengths = list(rng.integers(5, 250, size=2000))
    plan = plan_batches(lengths, max_batch_tokens=4096)
    assert plan.padding_fraction < 0.05
    # the same budget on arrival order (what a batch-of-N server does) pads far more
    naive_padded = sum(
        max(lengths[i : i + 16]) * len(lengths[i : i + 16]) for i in range(0, 2000, 16)
    )
    assert 1 - sum(lengths) / naive_padded > 0.3


def test_batches_are_bounded_by_tokens_not_by_count():
    plan = plan_batches([10] * 100 + [200] * 10, max_batch_tokens=1000)
    sizes = {len(b) for b in plan.batches}
    assert 5 in sizes and 100 in sizes  # 5 long rows per batch, 100 short ones per batch


def test_split_batch_replans_under_a_smaller_budget():
    lengths = [50, 50, 50, 50]
    parts = split_batch([0, 1, 2, 3], lengths, 100)
    assert parts == [[0, 1], [2, 3]]


def test_engine_restores_input_order_across_windows():
    enc = FakeHashEncoder()
    texts = texts_of_lengths(MIXED * 3)
    expected = np.stack([enc.forward(_one(enc, t))[0] for t in texts])
    enc.batches.clear()
    engine = BatchEngine(enc, max_batch_tokens=256, window=7)
    rows, stats = engine.encode(texts)
    np.testing.assert_array_equal(rows, expected)
    assert stats.items == len(texts)
    assert stats.batches == len(enc.batches) > len(texts) // 7
    assert all(r * w <= 256 or r == 1 for r, w in enc.batches)
    assert 0 <= stats.padding_fraction < 0.5


def test_sink_gets_windows_in_order_from_a_generator():
    enc = FakeHashEncoder()
    texts = texts_of_lengths(MIXED)
    seen: list[list[str]] = []
    engine = BatchEngine(enc, max_batch_tokens=128, window=6)
    stats = engine.run(
        ((i, t) for i, t in enumerate(texts)),
        lambda items, rows, failed: seen.append(items),
        text_of=lambda item: item[1],
    )
    assert [i for window in seen for i, _ in window] == list(range(len(texts)))
    assert [len(w) for w in seen] == [6, 6, 6, 2]
    assert stats.items == len(texts)


def test_out_of_memory_halves_the_budget_and_remembers_it():
    budget_that_fits = 300
    enc = FakeHashEncoder(oom_above=budget_that_fits)
    texts = texts_of_lengths(MIXED * 4)
    engine = BatchEngine(enc, max_batch_tokens=4096, window=40)
    rows, stats = engine.encode(texts)
    expected = np.stack([FakeHashEncoder().forward(_one(enc, t))[0] for t in texts])
    np.testing.assert_array_equal(rows, expected)
    assert stats.oom_retries == enc.oom_raised >= 1
    assert stats.final_max_batch_tokens <= budget_that_fits
    # remembered: once lowered, later windows are planned small and never OOM again
    assert enc.oom_raised <= 4
    assert not stats.failed


def test_an_input_that_cannot_fit_alone_is_failed_not_retried_forever():
    enc = FakeHashEncoder(oom_above=60)
    texts = texts_of_lengths([5, 100, 7])  # the middle one is 102 tokens: never fits
    rows, stats = BatchEngine(enc, max_batch_tokens=1024).encode(texts)
    assert list(stats.failed) == [1]
    assert "out of memory for a single input of 102 tokens" in stats.failed[1]
    assert np.isnan(rows[1]).all()
    assert not np.isnan(rows[[0, 2]]).any()
    assert stats.oom_retries <= 4


class ExplodingTokenizer(FakeHashEncoder):
    def tokenize(self, texts):
        if any("boom" in t for t in texts):
            raise ValueError("tokenizer exploded")
        return super().tokenize(texts)


def test_a_failing_stage_fails_the_run_instead_of_hanging():
    engine = BatchEngine(ExplodingTokenizer(), max_batch_tokens=64, window=2)
    with pytest.raises(ValueError, match="tokenizer exploded"):
        engine.encode(["fine", "fine too", "boom", "never reached"])

    def bad_sink(items, rows, failed):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        BatchEngine(FakeHashEncoder(), max_batch_tokens=64, window=2).run(
            ["a", "b", "c", "d", "e"], bad_sink
        )


def _one(enc, text):
    from corpusmill.engine.runner import collate

    return collate(enc.tokenize([text]), enc.pad_id)


@pytest.mark.parametrize("inline_items", [0, 64], ids=["threads", "calling-thread"])
def test_launch_ahead_queues_the_next_batch_before_the_last_rows_are_back(inline_items):
    texts = texts_of_lengths(MIXED * 3)
    expected, plain = BatchEngine(FakeHashEncoder(), max_batch_tokens=128).encode(texts)
    assert plain.batches > 2

    # The fake hands a batch's rows back only once the next batch is launched.
    ahead = FakeLaunchingEncoder(launches=plain.batches)
    engine = BatchEngine(ahead, max_batch_tokens=128, launch_ahead=True, inline_items=inline_items)
    rows, stats = engine.encode(texts)
    np.testing.assert_array_equal(rows, expected)
    assert ahead.max_pending >= 2 and ahead.pending == 0
    assert stats.device_wait_seconds > 0

    # Off, the same encoder is only ever called through `forward`: nothing is pending.
    sync = FakeLaunchingEncoder(launches=plain.batches)
    rows, stats = BatchEngine(sync, max_batch_tokens=128, inline_items=inline_items).encode(texts)
    np.testing.assert_array_equal(rows, expected)
    assert sync.max_pending == 0 and stats.device_wait_seconds == 0


class ThreadNoting(FakeHashEncoder):
    """FAKE, as above, that notes which threads tokenised (the forward always runs in the
    caller's thread; tokenising and the sink run in threads of their own in the stages)."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.threads: set[int] = set()

    def tokenize(self, texts):
        self.threads.add(threading.get_ident())
        return super().tokenize(texts)


def test_a_small_input_runs_in_the_calling_thread_a_larger_one_in_the_stages():
    me = threading.get_ident()
    for n, inline in ((1, True), (64, True), (65, False)):
        enc, sinks = ThreadNoting(), set()
        engine = BatchEngine(enc, max_batch_tokens=128)  # inline_items defaults to 64
        engine.run(
            texts_of_lengths([3] * n), lambda *_, into=sinks: into.add(threading.get_ident())
        )
        assert (enc.threads | sinks == {me}) is inline, (n, enc.threads, sinks)
    # ... and only when it is one window: the windows stay what the caller asked for.
    enc, seen = ThreadNoting(), []
    BatchEngine(enc, max_batch_tokens=128, window=4).run(
        texts_of_lengths([3] * 10), lambda items, rows, failed: seen.append(len(items))
    )
    assert seen == [4, 4, 2] and me not in enc.threads


def test_the_calling_thread_gives_what_the_three_stages_give():
    """Same rows, failures, budget back-off, statistics and progress either way."""
    texts = texts_of_lengths([5, 100, 7, 40, 33, 2, 60, 9])  # 102 tokens never fit

    def run(inline_items: int):
        seen, parts = [], []
        meter = ProgressMeter(seen.append, total=len(texts), every_batches=1)
        engine = BatchEngine(
            FakeHashEncoder(oom_above=100), max_batch_tokens=1024, inline_items=inline_items
        )
        stats = engine.run(texts, lambda _i, rows, _f: parts.append(rows), progress=meter)
        return np.concatenate(parts), stats, [p.done for p in seen]

    (rows0, stats0, progress0), (rows1, stats1, progress1) = run(0), run(64)
    np.testing.assert_array_equal(rows0, rows1)  # NaN rows compare equal here
    assert list(stats1.failed) == [1] and stats1.failed == stats0.failed
    assert stats1.oom_retries == stats0.oom_retries >= 1
    for field in ("items", "batches", "real_tokens", "padded_tokens", "final_max_batch_tokens"):
        assert getattr(stats1, field) == getattr(stats0, field), field
    assert progress1 == progress0 and progress1[-1] == len(texts)
