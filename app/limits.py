"""Back-pressure for the query service: a bound on the work in flight, and per-request limits.

Two budgets, both checked the moment a request would exceed them, never queued past:
- requests: every POST counts from the moment its headers arrive (before its body is read)
  until its answer is sent, so at most `max_requests` bodies are held at once;
- tokens: an embedding or rerank request reserves the tokens it will put through the
  model (counted exactly, by the model's tokenizer) until it is answered, so the
  micro-batcher's queue holds at most `max_tokens` tokens of work.

Past either, the answer is 429 with `Retry-After` (whole seconds: the tokens in flight over
the rate tokens were answered at lately, at least 1). So the queue in front of the model
is bounded by the settings, not by the clients, and memory with it.

The numbers are settings (`corpusmill/config.py`, CORPUSMILL_SERVE_*); `Limits` carries
them from there.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass

from corpusmill.config import Settings

RATE_WINDOW_S = 10.0  # answered tokens over this long give the rate Retry-After uses
MAX_RETRY_AFTER_S = 60


@dataclass(frozen=True)
class Limits:
    max_inflight: int  # requests being answered at once (POST routes)
    max_inflight_tokens: int  # tokens reserved by embedding and rerank requests at once
    max_inputs: int  # inputs of one /v1/embeddings request, documents of one /v1/rerank
    max_request_tokens: int  # tokens of one request

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_inflight=settings.serve_max_inflight,
            max_inflight_tokens=settings.serve_max_inflight_tokens,
            max_inputs=settings.serve_max_inputs,
            max_request_tokens=settings.serve_max_request_tokens,
        )


class Admission:
    """The two budgets. Thread-safe; `try_*` never blocks."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self.requests = 0
        self.tokens = 0
        self.peak_requests = 0  # the most ever in flight at once (metrics, tests)
        self.peak_tokens = 0
        self._answered: deque[tuple[float, int]] = deque()  # (when, tokens), last RATE_WINDOW_S

    def try_enter(self) -> bool:
        with self._lock:
            if self.requests >= self.limits.max_inflight:
                return False
            self.requests += 1
            self.peak_requests = max(self.peak_requests, self.requests)
            return True

    def leave(self) -> None:
        with self._lock:
            self.requests -= 1

    def try_reserve(self, tokens: int) -> bool:
        with self._lock:
            if self.tokens + tokens > self.limits.max_inflight_tokens:
                return False
            self.tokens += tokens
            self.peak_tokens = max(self.peak_tokens, self.tokens)
            return True

    def release(self, tokens: int, answered: bool = True) -> None:
        now = time.monotonic()
        with self._lock:
            self.tokens -= tokens
            if answered:
                self._answered.append((now, tokens))
            while self._answered and self._answered[0][0] < now - RATE_WINDOW_S:
                self._answered.popleft()

    def retry_after_s(self) -> int:
        """Seconds until the work in flight now is likely done, from the recent rate."""
        now = time.monotonic()
        with self._lock:
            recent = [(t, n) for t, n in self._answered if t >= now - RATE_WINDOW_S]
            in_flight = self.tokens
        span = max(1.0, now - recent[0][0]) if recent else RATE_WINDOW_S
        rate = sum(n for _, n in recent) / span
        if not rate or not in_flight:
            return 1
        return max(1, min(MAX_RETRY_AFTER_S, math.ceil(in_flight / rate)))
