"""The batch engine: tokenise, forward and write in three overlapping stages.

    producer thread(s)      main thread              writer thread
    tokenise a window  -->  forward one batch  -->   scatter rows back into input
    plan + pad batches  q1  (OOM: halve budget)  q2  order; hand each finished
                                                     window to the sink (LanceDB)

Like infinity's engine, the stages talk through bounded queues, so the model never waits
on tokenisation or on a LanceDB write, and memory stays bounded by the window size, not
by the corpus. On a GPU one tokenising thread cannot keep up with the model, so the
producer can spread a window over `tokenize_threads` workers (slices, order kept), and
with `launch_ahead` the main thread only queues each batch on the device: the writer
waits for its rows while the next batch is already being launched.
Unlike a chat runtime, nothing here is per request: the caller hands over a whole
partition and the engine decides the batches.

A small input (one window of at most `inline_items`: a query, a micro-batch of queries, a
rerank's candidates) runs the same stages one after another in the calling thread instead
(`_run_inline`): same plan, same batches, same rows, one forward path for every caller.

The encoder is any object with `tokenize(items) -> list[dict[str, list[int]]]`,
`forward(batch: dict) -> np.ndarray` and `pad_id`; `TransformerEncoder` is the real one,
tests use a labelled fake. An item may also arrive already tokenised, as `TokenIds`
(the ids the chunker computed when it measured the chunk): the engine then skips the
tokenizer for it, which on a GPU is most of the host's work per token.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np

from corpusmill.engine import streams as forward_streams
from corpusmill.engine.inputs import TokenIds, collate, collate_packed, is_out_of_memory
from corpusmill.engine.planner import BatchPlan, plan_batches, split_batch
from corpusmill.engine.progress import ProgressMeter
from corpusmill.engine.stats import EngineStats

__all__ = ["BatchEngine", "EngineStats", "Sink", "TokenIds", "collate"]

_DONE = object()
TOKENIZE_SLICE = 256  # texts per tokenising task when several threads tokenise
INLINE_ITEMS = 64  # inputs of at most this many items run in the calling thread


Sink = Callable[[list[Any], np.ndarray, dict[int, str]], None]


class BatchEngine:
    """Streams items through a resident encoder in token-budgeted, length-sorted batches."""

    def __init__(
        self,
        encoder: Any,
        *,
        max_batch_tokens: int = 16384,
        max_batch_size: int | None = None,
        window: int = 4096,
        queue_depth: int = 4,
        pin_memory: bool = False,
        tokenize_threads: int = 1,
        launch_ahead: bool = False,
        inline_items: int = INLINE_ITEMS,
        streams: int = 1,
        stream_threads: int = 1,
    ) -> None:
        self.encoder = encoder
        self.max_batch_tokens = max_batch_tokens  # lowered for the rest of the run on OOM
        self.max_batch_size = max_batch_size
        self.window = window
        self.queue_depth = queue_depth
        self.pin_memory = pin_memory
        self.tokenize_threads = max(1, tokenize_threads)
        # Queue each batch on the device and let the writer wait for its rows, so the next
        # launch overlaps this batch's GPU time (needs an encoder with `launch`).
        self.launch_ahead = launch_ahead and hasattr(encoder, "launch")
        self.inline_items = inline_items  # 0: every input through the three threads
        # CPU: the forward on `streams` threads of `stream_threads` intra-op threads each,
        # each taking whole batches (engine/streams.py); 1: on the calling thread.
        self.streams = 1 if self.launch_ahead else max(1, streams)
        self.stream_threads = max(1, stream_threads)
        # An encoder that takes packed rows (no padded tokens) says so, and how many rows it
        # computes for a batch (model/bert_cpu.py).
        self.packed = bool(getattr(encoder, "packed_batches", False))

    # -- public API -----------------------------------------------------------------
    def encode(self, items: Sequence[Any]) -> tuple[np.ndarray, EngineStats]:
        """Encode everything and return rows in input order (failed rows are NaN)."""
        parts: list[np.ndarray] = []
        stats = self.run(items, sink=lambda _items, rows, _failed: parts.append(rows))
        if not parts:
            return np.zeros((0, 0), dtype=np.float32), stats
        return np.concatenate(parts), stats

    def run(
        self,
        items: Iterable[Any],
        sink: Sink,
        text_of: Callable[[Any], Any] | None = None,
        progress: ProgressMeter | None = None,
    ) -> EngineStats:
        """Encode `items` window by window; `sink(window_items, rows, failed)` is called once
        per window, in order, from the writer thread (rows in the window's input order;
        `failed` maps a window-local index to the reason it has no row). `text_of` picks
        what to tokenise from an item, e.g. the text of a (key, text) pair. `progress` is
        advanced as each batch's rows arrive (failed items count as done) and finished
        when the run ends.

        An input of one window and at most `inline_items` items runs in the calling thread
        (`_run_inline`), the sink called from there; the engine reads no more than that
        many items ahead to decide."""
        it = iter(items)
        small = min(self.inline_items, self.window)
        head = list(islice(it, small + 1))
        if len(head) <= small:
            return self._run_inline(head, sink, text_of, progress)
        return self._run_threaded(itertools.chain(head, it), sink, text_of, progress)

    def _run_inline(
        self,
        items: Sequence[Any],
        sink: Sink,
        text_of: Callable[[Any], Any] | None = None,
        progress: ProgressMeter | None = None,
    ) -> EngineStats:
        """`run` with every stage in the calling thread, one after another: tokenise the
        whole input as one window, plan it, forward each batch (with the same out-of-memory
        back-off), scatter the rows back into input order, call the sink once. With
        `launch_ahead` a batch's rows are waited for after the next batch is launched, as
        the writer thread would.

        Why: a small input is one window, which the producer tokenises whole before the
        first forward, and mostly one batch, whose stages depend on each other; the threads
        would overlap almost nothing, and starting, feeding and joining them is a fixed
        cost of the order of a query's own forward on a CPU (measured with MiniLM on 2
        cores: one query is faster this way, 64 short ones no slower). With CPU streams
        the stages run on one new thread with a stream's intra-op threads (engine/streams.py)
        and the sink in the calling thread: under load, 1 query took 7.8 ms this way against
        14.7 on both threads, 16 queries 40 against 78 ms (`bench/engine_inline.py`)."""
        stats = EngineStats(final_max_batch_tokens=self.max_batch_tokens)
        start = time.perf_counter()
        if progress is not None:
            progress.begin()
        items = list(items)
        if items:
            if self.streams > 1:
                window = forward_streams.run_on_thread(
                    self.stream_threads, lambda: self._inline_rows(items, text_of, stats, progress)
                )
            else:
                window = self._inline_rows(items, text_of, stats, progress)
            assert isinstance(window, _Window)
            self._finish(window, sink, stats)
        stats.wall_seconds = time.perf_counter() - start
        stats.final_max_batch_tokens = self.max_batch_tokens
        if progress is not None:
            progress.finish()
        return stats

    def _inline_rows(self, items: list, text_of, stats: EngineStats, progress) -> _Window:
        """Tokenise, plan and forward `items` as one window, one batch after another."""
        tokens, plan = self._plan_window(items, text_of, None, stats)
        window = _Window(0, items, len(plan.batches))
        launched = None  # the last batch's rows, possibly still on the device
        for indices in plan.batches:
            toks = [tokens[i] for i in indices]
            batch = self._collate(toks)
            for done in self._forward_with_backoff(indices, toks, batch, stats):
                if launched is not None:
                    self._take_rows(window, launched, stats, progress)
                launched = done
        if launched is not None:
            self._take_rows(window, launched, stats, progress)
        return window

    def _run_threaded(
        self,
        items: Iterator[Any],
        sink: Sink,
        text_of: Callable[[Any], Any] | None,
        progress: ProgressMeter | None,
    ) -> EngineStats:
        stats = EngineStats(final_max_batch_tokens=self.max_batch_tokens)
        to_forward: queue.Queue = queue.Queue(max(self.queue_depth, 2 * self.streams))
        to_write: queue.Queue = queue.Queue(max(self.queue_depth, 2 * self.streams))
        errors: list[BaseException] = []
        stop = threading.Event()
        start = time.perf_counter()

        producer = threading.Thread(
            target=self._produce,
            args=(items, text_of, to_forward, to_write, stats, errors, stop),
            daemon=True,
        )
        writer = threading.Thread(
            target=self._write, args=(to_write, sink, stats, errors, stop, progress), daemon=True
        )
        if progress is not None:
            progress.begin()
        producer.start()
        writer.start()
        try:
            if self.streams == 1:
                self._forward_loop(to_forward, to_write, stats, stop)
            else:
                self._forward_on_streams(to_forward, to_write, stats, errors, stop)
        except BaseException as exc:
            errors.append(exc)
            stop.set()
        finally:
            _put(to_write, _DONE, stop)
            while producer.is_alive():  # drain so a blocked producer can finish
                with contextlib.suppress(queue.Empty):
                    to_forward.get(timeout=0.05)
            producer.join()
            writer.join()
        stats.wall_seconds = time.perf_counter() - start
        stats.final_max_batch_tokens = self.max_batch_tokens
        if errors:
            raise errors[0]
        if progress is not None:
            progress.finish()
        return stats

    # -- stages ---------------------------------------------------------------------
    def _produce(
        self, it: Iterator, text_of, out: queue.Queue, to_write: queue.Queue, stats, errors, stop
    ) -> None:
        """Tokenise and plan each window; announce it to the writer (before any of its
        batches can reach the forward, so the writer always knows a batch's window), then
        queue its batches."""
        pool = ThreadPoolExecutor(self.tokenize_threads) if self.tokenize_threads > 1 else None
        try:
            offset = 0
            for wid in itertools.count():
                if stop.is_set():
                    break
                window_items = list(islice(it, self.window))
                if not window_items:
                    break
                tokens, plan = self._plan_window(window_items, text_of, pool, stats)
                _put(to_write, ("window", wid, offset, window_items, len(plan.batches)), stop)
                for indices in plan.batches:
                    toks = [tokens[i] for i in indices]
                    _put(out, ("batch", wid, indices, toks, self._collate(toks)), stop)
                offset += len(window_items)
        except BaseException as exc:  # surfaced by run()
            errors.append(exc)
            stop.set()
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            _put(out, _DONE, stop)

    def _collate(self, toks: list) -> dict:
        if self.packed:
            return collate_packed(toks)
        return collate(toks, self.encoder.pad_id, self.pin_memory)

    def _plan_window(
        self, window_items: list, text_of, pool: ThreadPoolExecutor | None, stats: EngineStats
    ) -> tuple[list, BatchPlan]:
        """The window's token ids (input order) and its batches."""
        t0 = time.perf_counter()
        texts = window_items if text_of is None else [text_of(x) for x in window_items]
        tokens = self._tokenize(texts, pool, stats)
        lengths = [len(t["input_ids"]) for t in tokens]
        plan = plan_batches(lengths, self.max_batch_tokens, self.max_batch_size)
        stats.tokenize_seconds += time.perf_counter() - t0
        return tokens, plan

    def _tokenize(self, texts: list, pool: ThreadPoolExecutor | None, stats: EngineStats) -> list:
        """The window's token ids in input order. `TokenIds` items are taken as they are;
        the rest go through the encoder's tokenizer."""
        if not any(isinstance(t, TokenIds) for t in texts):
            return self._run_tokenizer(texts, pool)
        raw = [t for t in texts if not isinstance(t, TokenIds)]
        tokenised = iter(self._run_tokenizer(raw, pool) if raw else [])
        # Single-sequence inputs: every token type id is 0, which collate fills in for a row
        # without them.
        out = [{"input_ids": t.ids} if isinstance(t, TokenIds) else next(tokenised) for t in texts]
        stats.pretokenized += len(texts) - len(raw)
        return out

    def _run_tokenizer(self, texts: list, pool: ThreadPoolExecutor | None) -> list:
        """Sliced over the pool when there is one (the Rust tokenizer releases the GIL, so
        the slices really run in parallel)."""
        if pool is None or len(texts) <= TOKENIZE_SLICE:
            return self.encoder.tokenize(texts)
        slices = [texts[i : i + TOKENIZE_SLICE] for i in range(0, len(texts), TOKENIZE_SLICE)]
        return [t for part in pool.map(self.encoder.tokenize, slices) for t in part]

    def _forward_loop(
        self, inbox: queue.Queue, outbox: queue.Queue, stats: EngineStats, stop
    ) -> None:
        while True:
            msg = inbox.get()
            if msg is _DONE or stop.is_set():
                if msg is _DONE:
                    inbox.put(_DONE)  # for the other streams
                return
            _, wid, indices, tokens, batch = msg
            for sub_indices, rows, failure, n_tokens in self._forward_with_backoff(
                indices, tokens, batch, stats
            ):
                _put(outbox, ("rows", wid, sub_indices, rows, failure, n_tokens), stop)
            _put(outbox, ("batch_done", wid), stop)

    def _forward_on_streams(
        self, inbox: queue.Queue, outbox: queue.Queue, stats: EngineStats, errors, stop
    ) -> None:
        """`_forward_loop` on `streams` threads at once (engine/streams.py), each counting
        into its own statistics, added up at the end."""
        per_stream = [EngineStats() for _ in range(self.streams)]

        def loop(i: int) -> None:
            try:
                self._forward_loop(inbox, outbox, per_stream[i], stop)
            except BaseException as exc:  # surfaced by run()
                errors.append(exc)
                stop.set()

        workers = forward_streams.start(self.streams, self.stream_threads, loop)
        for w in workers:
            w.join()
        for s in per_stream:
            stats.add_forward(s)

    def _forward_with_backoff(self, indices, tokens, batch, stats: EngineStats):
        """Yield (indices, rows, failure, real tokens) for one planned batch.

        On a CUDA out-of-memory the budget is halved for this batch *and* for the rest of
        the run (the safe size is remembered, not rediscovered per batch); a single input
        that still does not fit is failed with its reason instead of being retried forever.
        """
        lengths = {i: len(t["input_ids"]) for i, t in zip(indices, tokens, strict=True)}
        pending = [(indices, tokens, batch)]
        while pending:
            idx, toks, b = pending.pop(0)
            width = max(lengths[i] for i in idx)
            if len(idx) > 1 and width * len(idx) > self.max_batch_tokens:
                pending[:0] = self._resplit(idx, toks, lengths)
                continue
            try:
                t0 = time.perf_counter()
                rows = self.encoder.launch(b) if self.launch_ahead else self.encoder.forward(b)
                stats.forward_seconds += time.perf_counter() - t0
            except BaseException as exc:
                if not is_out_of_memory(exc):
                    raise
                _release_cuda_cache()
                stats.oom_retries += 1
                if len(idx) == 1:
                    yield idx, None, f"out of memory for a single input of {width} tokens", 0
                    continue
                self.max_batch_tokens = max(1, min(self.max_batch_tokens, width * len(idx)) // 2)
                pending[:0] = self._resplit(idx, toks, lengths)
                continue
            real = sum(lengths[i] for i in idx)
            stats.batches += 1
            stats.real_tokens += real
            stats.padded_tokens += (
                self.encoder.packed_rows(real) if self.packed else width * len(idx)
            )
            yield idx, rows, None, real

    def _resplit(self, idx, toks, lengths):
        by_index = dict(zip(idx, toks, strict=True))
        parts = split_batch(idx, lengths, self.max_batch_tokens)
        return [
            (
                p,
                [by_index[i] for i in p],
                self._collate([by_index[i] for i in p]),
            )
            for p in parts
        ]

    def _write(
        self, inbox: queue.Queue, sink: Sink, stats: EngineStats, errors, stop, progress
    ) -> None:
        """Reassemble each window from its batches' rows (which several streams may finish
        in any order) and hand finished windows to the sink in input order."""
        windows: dict[int, _Window] = {}
        next_window = 0
        try:
            while True:
                msg = inbox.get()
                if msg is _DONE:
                    return
                kind, wid = msg[0], msg[1]
                if kind == "window":
                    _, _, offset, window_items, n_batches = msg
                    windows[wid] = _Window(offset, window_items, n_batches)
                elif kind == "rows":
                    self._take_rows(windows[wid], msg[2:], stats, progress)
                elif kind == "batch_done":
                    windows[wid].batches_left -= 1
                while next_window in windows and windows[next_window].batches_left == 0:
                    self._finish(windows.pop(next_window), sink, stats)
                    next_window += 1
        except BaseException as exc:
            errors.append(exc)
            stop.set()
            while inbox.get() is not _DONE:  # keep the forward loop from blocking
                pass

    @staticmethod
    def _take_rows(window: _Window, done: tuple, stats: EngineStats, progress) -> None:
        """One batch's (indices, rows, failure, real tokens), as `_forward_with_backoff`
        yields them, into the window being reassembled."""
        indices, rows, failure, n_tokens = done
        if rows is None:
            for i in indices:
                window.failed[i] = failure
        else:
            if not isinstance(rows, np.ndarray):  # launched, still on the device
                t0 = time.perf_counter()
                rows = rows.wait()
                stats.device_wait_seconds += time.perf_counter() - t0
            window.put(indices, rows)
        if progress is not None:
            progress.advance(len(indices), n_tokens)

    @staticmethod
    def _finish(window: _Window, sink: Sink, stats: EngineStats) -> None:
        t0 = time.perf_counter()
        sink(window.items, window.finished_rows(), window.failed)
        stats.sink_seconds += time.perf_counter() - t0
        stats.items += len(window.items)
        stats.failed.update({window.offset + i: r for i, r in window.failed.items()})


@dataclass
class _Window:
    """One window of input being reassembled in input order by the writer."""

    offset: int  # index of the window's first item in the whole input
    items: list[Any]
    batches_left: int
    rows: np.ndarray | None = None  # allocated at the first batch (its width is the dimension)
    failed: dict[int, str] = field(default_factory=dict)  # window-local index -> reason

    def put(self, indices: Sequence[int], rows: np.ndarray) -> None:
        if self.rows is None:
            self.rows = np.full((len(self.items), rows.shape[1]), np.nan, dtype=np.float32)
        self.rows[list(indices)] = rows

    def finished_rows(self) -> np.ndarray:
        if self.rows is None:  # every batch failed
            return np.full((len(self.items), 0), np.nan, dtype=np.float32)
        return self.rows


def _put(q: queue.Queue, item, stop: threading.Event) -> None:
    while True:
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            if stop.is_set() and item is not _DONE:
                return


def _release_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
