"""`GET /metrics`: the service in Prometheus text format, through `prometheus_client`.

One registry per app (two apps in one process, as the tests run them, never share a
series). What it holds:

    corpusmill_http_requests_total{route,method,status}      every answer, 401/413/429 too
    corpusmill_http_errors_total{route,method,status}        the answers with status >= 400
    corpusmill_http_request_duration_seconds{route}          latency histogram
    corpusmill_requests_rejected_total{bound}                429s: `requests` or `tokens`
    corpusmill_inflight_requests / _inflight_tokens          the two budgets' use now
    corpusmill_microbatch_queue_depth                        texts waiting for a forward
    corpusmill_microbatch_size                               texts per forward (histogram)
    corpusmill_tokens_embedded_total                         tokens /v1/embeddings embedded
    corpusmill_inputs_embedded_total                         inputs /v1/embeddings embedded
    corpusmill_tokens_scored_total                           tokens /v1/rerank put through
    corpusmill_model_loads_total{kind}                       weight loads in this process
    corpusmill_table_version{table="embeddings"}             the live table's version
    process_*                                                prometheus_client's own (RSS, CPU)

`route` is the route's path, or `other` for a path the app does not serve (so a scan of
random URLs cannot grow the series without bound). A request is counted just before its
last body byte is sent, so a client that has its answer also sees it counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from corpusmill.model import LOADS

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

__all__ = ["CONTENT_TYPE_LATEST", "ServiceMetrics"]


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        labels = ["route", "method", "status"]
        self.requests = Counter(
            "corpusmill_http_requests", "HTTP requests answered", labels, registry=r
        )
        self.errors = Counter(
            "corpusmill_http_errors",
            "HTTP requests answered with status >= 400",
            labels,
            registry=r,
        )
        self.latency = Histogram(
            "corpusmill_http_request_duration_seconds",
            "From the request's arrival to its last body byte",
            ["route"],
            registry=r,
        )
        self.rejected = Counter(
            "corpusmill_requests_rejected",
            "Requests answered 429, by the in-flight bound they met",
            ["bound"],
            registry=r,
        )
        self.batch_size = Histogram(
            "corpusmill_microbatch_size",
            "Texts per micro-batched forward",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.tokens_embedded = Counter(
            "corpusmill_tokens_embedded", "Tokens embedded for /v1/embeddings", registry=r
        )
        self.inputs_embedded = Counter(
            "corpusmill_inputs_embedded", "Inputs embedded for /v1/embeddings", registry=r
        )
        self.tokens_scored = Counter(
            "corpusmill_tokens_scored", "Tokens scored for /v1/rerank", registry=r
        )
        ProcessCollector(registry=r)

    def watch(
        self,
        *,
        queue_depth: Callable[[], float],
        inflight_requests: Callable[[], float],
        inflight_tokens: Callable[[], float],
        table_version: Callable[[], int | None],
    ) -> None:
        """Gauges read at scrape time from the service's own objects."""
        r = self.registry
        for name, doc, read in (
            ("corpusmill_microbatch_queue_depth", "Texts waiting for a forward", queue_depth),
            ("corpusmill_inflight_requests", "POST requests being answered", inflight_requests),
            ("corpusmill_inflight_tokens", "Tokens reserved by requests", inflight_tokens),
        ):
            Gauge(name, doc, registry=r).set_function(read)
        r.register(_Live(table_version))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def middleware(self, app, routes: Callable[[], Iterable[str]]):
        """`app` with every HTTP answer counted and timed (outermost: the guard's 401, 413
        and 429 are counted too)."""
        known: set[str] = set()

        async def measured(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            if not known:
                known.update(routes())
            route = scope["path"] if scope["path"] in known else "other"
            method = scope["method"]
            start = time.perf_counter()
            status = 500
            counted = False

            def count() -> None:
                nonlocal counted
                counted = True
                values = (route, method, str(status))
                self.requests.labels(*values).inc()
                if status >= 400:
                    self.errors.labels(*values).inc()
                if status == 429:
                    self.rejected.labels(_bound_of(scope)).inc()
                self.latency.labels(route).observe(time.perf_counter() - start)

            async def counting_send(message):
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                elif message["type"] == "http.response.body" and not message.get("more_body"):
                    count()  # before the last byte leaves: the client never sees it uncounted
                await send(message)

            try:
                await app(scope, receive, counting_send)
            finally:
                if not counted:
                    count()

        return measured


REJECTED_BY = "corpusmill.rejected_by"  # scope key a route sets when it answers 429


def _bound_of(scope) -> str:
    """`tokens` when a route refused for the token budget; else the guard's request bound."""
    return scope.get(REJECTED_BY, "requests")


class _Live:
    """Values read from the store and the model module at scrape time."""

    def __init__(self, table_version: Callable[[], int | None]) -> None:
        self.table_version = table_version

    def describe(self) -> list[Metric]:
        return []  # read live; nothing to check for duplicates at registration

    def collect(self) -> Iterable[Metric]:
        loads = CounterMetricFamily(
            "corpusmill_model_loads", "Model weight loads in this process", labels=["kind"]
        )
        for kind, n in sorted(LOADS.items()):
            loads.add_metric([kind], n)
        yield loads
        version = self.table_version()
        if version is not None:
            live = GaugeMetricFamily(
                "corpusmill_table_version",
                "Version of the table the service answers from",
                labels=["table"],
            )
            live.add_metric(["embeddings"], version)
            yield live
