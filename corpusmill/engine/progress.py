"""Live progress of a long embedding run: how far, how fast, how long still.

Between a step's start and its output an operator otherwise sees nothing for minutes or
hours, and a slow run looks like a hung one. The engine counts items and tokens as batches
finish and hands a `Progress` snapshot to a callback at a steady rhythm (every `every_s`
seconds, or every `every_batches` batches when that is set), plus once at the end.
Who listens decides what to show: the embeddings asset writes a run-log line, the CLI
moves a progress bar. The chunking step reports a huge document the same way (characters
chunked of its total), so a long tokenisation is never silent either.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_EVERY_S = 5.0
# The key under which a progress log line carries its numbers (`extra=`), for loggers that
# show them otherwise (the CLI's progress bar).
PROGRESS_EXTRA = "corpusmill_progress"


@dataclass(frozen=True)
class Progress:
    """One snapshot. `total` is 0 when the caller did not know it (no percentage, no ETA)."""

    done: int
    total: int
    tokens: int
    seconds: float
    final: bool = False
    step: str = "embedded"  # what is being done: "embedded", "chunked"
    unit: str = "chunks"  # what `done` and `total` count

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the item rate so far; None before the first item or without a total."""
        if not self.total or not self.done or self.seconds <= 0:
            return None
        return max(0.0, (self.total - self.done) * self.seconds / self.done)

    def line(self, what: str = "") -> str:
        """The run-log line, e.g. `embedded 1,200/5,000 chunks (24%), 3,400 tokens/s, ~1m 12s left`."""
        what = what or self.unit
        if self.total:
            head = (
                f"{self.step} {self.done:,}/{self.total:,} {what} "
                f"({100 * self.done // self.total}%)"
            )
        else:
            head = f"{self.step} {self.done:,} {what}"
        rate = f"{self.tokens_per_s:,.0f} tokens/s"
        if self.final:
            return f"{head}, {rate}, done in {format_seconds(self.seconds)}"
        eta = self.eta_s
        left = f", ~{format_seconds(eta)} left" if eta is not None else ""
        return f"{head}, {rate}{left}"


ProgressCallback = Callable[[Progress], None]


def log_progress(log: logging.Logger | logging.LoggerAdapter) -> ProgressCallback:
    """Progress as run-log lines (a Dagster step's `context.log`), each carrying its
    numbers for the CLI's bar (`PROGRESS_EXTRA`)."""

    def report(p: Progress) -> None:
        log.info(p.line(), extra={PROGRESS_EXTRA: dataclasses.asdict(p)})

    return report


def format_seconds(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


class ProgressMeter:
    """Counts finished items and tokens and calls `callback` at the rhythm: every `every_s`
    seconds (by `clock`), or every `every_batches` batches when that is > 0. Thread-safe:
    the engine's writer thread advances it. A failing callback never fails the run."""

    def __init__(
        self,
        callback: ProgressCallback,
        total: int = 0,
        *,
        every_s: float = DEFAULT_EVERY_S,
        every_batches: int = 0,
        clock: Callable[[], float] = time.monotonic,
        step: str = "embedded",
        unit: str = "chunks",
    ) -> None:
        self.callback = callback
        self.total = total
        self.every_s = every_s
        self.every_batches = every_batches
        self.clock = clock
        self.step, self.unit = step, unit
        self.done = 0
        self.tokens = 0
        self.batches = 0
        self.calls = 0
        self._start = clock()
        self._last = self._start
        self._last_batches = 0
        self._lock = threading.Lock()

    def begin(self) -> None:
        """Start the clock now (the engine calls it when the first window is on its way, so
        the model's load time does not count against tokens/s)."""
        with self._lock:
            self._start = self._last = self.clock()

    def advance(self, items: int, tokens: int) -> None:
        """One batch finished with `items` items of `tokens` real tokens."""
        with self._lock:
            self.done += items
            self.tokens += tokens
            self.batches += 1
            now = self.clock()
            if self.every_batches > 0:
                due = self.batches - self._last_batches >= self.every_batches
            else:
                due = now - self._last >= self.every_s
            if not due:
                return
            self._last, self._last_batches = now, self.batches
            snapshot = self._snapshot(now, final=False)
        self._emit(snapshot)

    def finish(self) -> None:
        """The closing snapshot (always sent, so a short run still reports once)."""
        with self._lock:
            snapshot = self._snapshot(self.clock(), final=True)
        self._emit(snapshot)

    def _snapshot(self, now: float, final: bool) -> Progress:
        return Progress(
            self.done, self.total, self.tokens, now - self._start, final, self.step, self.unit
        )

    def _emit(self, snapshot: Progress) -> None:
        self.calls += 1
        try:
            self.callback(snapshot)
        except Exception:  # a broken progress display must not lose the embeddings
            logging.getLogger(__name__).exception("progress callback failed")
