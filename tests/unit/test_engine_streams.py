"""Forward streams (corpusmill/engine/streams.py): several threads each running whole
batches give the rows one thread gives, windows reach the sink in input order, a failure in
one stream stops the run, and each stream's intra-op thread count stays its own."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from corpusmill.engine import streams
from corpusmill.engine.runner import BatchEngine
from corpusmill.model.encoder import TransformerEncoder
from tests.texts import MIXED_TEXTS

TEXTS = [f"{t} number {i}" for i in range(40) for t in MIXED_TEXTS[i % 5 : i % 5 + 1]]


@pytest.mark.parametrize("forward", ["transformers", "auto"])
def test_streams_give_the_rows_of_one_thread_with_windows_in_order(tiny_embedder_path, forward):
    enc = TransformerEncoder(tiny_embedder_path, forward=forward)
    one = BatchEngine(enc, max_batch_tokens=256, window=7, inline_items=0)
    two = BatchEngine(enc, max_batch_tokens=256, window=7, inline_items=0, streams=2)
    want, _ = one.encode(TEXTS)
    windows: list[list] = []
    parts: list[np.ndarray] = []

    def sink(items, rows, failed):
        windows.append(list(items))
        parts.append(rows)

    stats = two.run(TEXTS, sink)
    assert [t for w in windows for t in w] == TEXTS  # every window once, in input order
    np.testing.assert_allclose(np.concatenate(parts), want, atol=1e-6)
    assert stats.items == len(TEXTS) and stats.batches > 2


def test_a_failing_stream_stops_the_run_with_its_error(tiny_embedder_path):
    enc = TransformerEncoder(tiny_embedder_path, dtype="float32")
    calls = []
    real = enc.forward

    def forward(batch):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("stream broke")
        return real(batch)

    enc.forward = forward  # type: ignore[method-assign]
    engine = BatchEngine(enc, max_batch_tokens=128, window=5, inline_items=0, streams=2)
    with pytest.raises(RuntimeError, match="stream broke"):
        engine.encode(TEXTS)


def test_each_stream_keeps_its_own_thread_count_and_the_caller_keeps_its_own():
    before = torch.get_num_threads()
    seen: dict[int, int] = {}
    go = threading.Event()

    def work(i: int) -> None:
        go.wait()
        torch.ones(64, 64) @ torch.ones(64, 64)
        seen[i] = torch.get_num_threads()

    workers = streams.start(2, 1, work)
    assert torch.get_num_threads() == before  # set back once the streams had set theirs
    go.set()
    for w in workers:
        w.join()
    assert seen == {0: 1, 1: 1}
    fresh: list[int] = []
    later = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
    later.start()
    later.join()
    assert fresh == [before]  # a thread started afterwards gets the process's count
