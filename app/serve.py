"""`corpusmill serve`: the store as an HTTP JSON service, the model resident.

    corpusmill serve                          # 127.0.0.1:8000, OpenAPI docs at /docs
    curl -s localhost:8000/search -H 'content-type: application/json' \\
         -d '{"query": "how do I catch an exception", "k": 3, "mode": "hybrid"}'

Endpoints: POST /search, POST /search/batch, GET /health, GET /store. Hits carry the same
fields as `corpusmill search --json` (`Hit.as_dict()`).

- One model load per process (`corpusmill.model.Model`, from the settings read once by
  app/cli.py); single queries are embedded in micro-batches (the model's
  `micro_batcher`, corpusmill/engine/microbatch.py), a batch request in one pass of the
  embedder (`Searcher.search_many`); both reach the forward through the batch engine.
- Fresh reads: every request searches `Searcher.pinned()`, the live generation at the
  latest committed version of its table, fixed for that request; an ingest commits a
  partition's rows in one commit, so a request sees all of a document's chunks or none of
  them. When the live pointer moves (a promotion, a rollback), the next request pins the
  new generation, loads its model once if it is new to this process, and embeds its query
  with it: one micro-batcher per generation, so a query vector always meets the table of
  the model that made it. Each answer names its generation.
- Safe by default: bodies validated (422 naming each bad field, unknown fields refused),
  `k`, `candidates`, query length and batch size bounded, bodies over MAX_BODY_BYTES get
  413, filters become LanceDB expressions (`build_filter`), and with a token
  (CORPUSMILL_API_TOKEN) every request must carry `Authorization: Bearer <token>`; binding
  anything but loopback without one is refused (app/auth.py).
"""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager
from typing import Annotated, Literal

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from app.auth import check_bind, guard
from corpusmill.config import Settings
from corpusmill.engine.microbatch import (
    DEFAULT_MAX_BATCH,
    DEFAULT_WAIT_S,
    MicroBatcher,
    batch_stats,
)
from corpusmill.errors import ConfigError, CorpusmillError
from corpusmill.ids import ALL_PARTITIONS
from corpusmill.search.fusion import DEFAULT_FUSION
from corpusmill.store import table_card

MAX_K = 1000  # as deep as `make eval` searches; deeper is a table dump, not a search
MAX_CANDIDATES = 200  # hits a rerank rescores: each is a forward pair
MAX_QUERY_CHARS = 2000  # far past the model's 256-token window
MAX_BATCH_QUERIES = 1000
MAX_BODY_BYTES = 1 << 20  # 1 MiB: a full batch of long queries fits with room to spare


class SearchOptions(BaseModel):
    # strict: "10" is not a k, "yes" is not a bool; forbid: a misspelt field is an error,
    # not a silently ignored filter.
    model_config = ConfigDict(extra="forbid", strict=True)

    k: int = Field(10, ge=1, le=MAX_K)
    mode: Literal["vector", "fts", "hybrid"] = "vector"
    fusion: Literal["convex", "rrf"] = DEFAULT_FUSION  # type: ignore[assignment]
    rerank: bool = False
    candidates: int | None = Field(None, ge=1, le=MAX_CANDIDATES)
    doc_id: str | None = Field(None, min_length=1, max_length=1000)
    source: str | None = Field(None, min_length=1, max_length=1000)
    partition: str | None = None

    @field_validator("partition")
    @classmethod
    def _shard_key(cls, value: str | None) -> str | None:
        if value is not None and value not in ALL_PARTITIONS:
            raise ValueError(f"not a shard key; use {ALL_PARTITIONS[0]} .. {ALL_PARTITIONS[-1]}")
        return value

    def options(self, default_candidates: int) -> dict:
        return {
            "k": self.k,
            "mode": self.mode,
            "fusion": self.fusion,
            "rerank": self.rerank,
            "candidates": self.candidates or default_candidates,
            "doc_id": self.doc_id,
            "source": self.source,
            "partition": self.partition,
        }


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


# A query's text: bounded, and not only white space (an empty query embeds to noise).
QueryText = Annotated[str, Field(max_length=MAX_QUERY_CHARS), AfterValidator(_not_blank)]


class SearchRequest(SearchOptions):
    query: QueryText


class BatchQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    id: str | int
    text: QueryText


class BatchRequest(SearchOptions):
    queries: list[BatchQuery] = Field(min_length=1, max_length=MAX_BATCH_QUERIES)


def create_app(
    searcher,
    *,
    token: str | None = None,
    max_wait_s: float = DEFAULT_WAIT_S,
    max_batch: int = DEFAULT_MAX_BATCH,
    default_candidates: int = 50,
    max_body_bytes: int = MAX_BODY_BYTES,
):
    """The ASGI app over `searcher` (a `corpusmill.search.Searcher` with its model): the
    FastAPI app behind the token and body-size guard (`.app` reaches the FastAPI app)."""
    batchers = Batchers(max_wait_s=max_wait_s, max_batch=max_batch)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        batchers.close()

    app = FastAPI(title="corpusmill", summary="Search a corpusmill store", lifespan=lifespan)
    app.state.batchers = batchers

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        fields = [
            {
                # a body that is not JSON at all is located by character offset: say "body"
                "field": "body"
                if e["type"] == "json_invalid"
                else ".".join(str(p) for p in e["loc"] if p != "body") or "body",
                "error": e["msg"],
            }
            for e in exc.errors()
        ]
        return JSONResponse({"error": "invalid request", "fields": fields}, status_code=422)

    @app.exception_handler(CorpusmillError)
    async def _refused(request: Request, exc: CorpusmillError):
        return JSONResponse({"error": str(exc)}, status_code=400)

    def pin():
        try:
            return searcher.pinned()
        except ConfigError as exc:  # no embeddings table yet: the service is up, the store not
            raise _Unavailable(str(exc)) from exc

    @app.exception_handler(_Unavailable)
    async def _unavailable(request: Request, exc: _Unavailable):
        return JSONResponse({"error": str(exc)}, status_code=503)

    @app.post("/search")
    async def search(body: SearchRequest) -> dict:
        view = await run_in_threadpool(pin)
        wants_vector = searcher.needs_vector(body.mode, body.rerank)
        vector = await batchers.of(view).embed(body.query) if wants_vector else None
        opts = body.options(default_candidates)
        hits = await run_in_threadpool(view.search, body.query, vector=vector, **opts)
        return {
            "hits": [h.as_dict() for h in hits],
            "table_version": view.table.version,
            "generation": view.generation.gen_id,
        }

    @app.post("/search/batch")
    async def search_batch(body: BatchRequest) -> dict:
        view = await run_in_threadpool(pin)
        opts = body.options(default_candidates)
        texts = [q.text for q in body.queries]
        per_query = await run_in_threadpool(view.search_many, texts, **opts)
        return {
            "results": [
                {"id": q.id, "hits": [h.as_dict() for h in hits]}
                for q, hits in zip(body.queries, per_query, strict=True)
            ],
            "table_version": view.table.version,
            "generation": view.generation.gen_id,
        }

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": searcher.embedder.card.model_id, **batchers.stats()}

    @app.get("/store")
    async def store() -> dict:
        return await run_in_threadpool(describe_store, searcher)

    return guard(app, token=token, max_body_bytes=max_body_bytes)


class _Unavailable(Exception):
    pass


class Batchers:
    """One micro-batcher per generation the service has answered from: a batch holds the
    queries of one model only. Made on a generation's first request; closed at shutdown."""

    def __init__(self, *, max_wait_s: float, max_batch: int) -> None:
        self.max_wait_s, self.max_batch = max_wait_s, max_batch
        self._by_generation: dict[str, MicroBatcher] = {}
        self._lock = threading.Lock()

    def of(self, view) -> MicroBatcher:
        """The batcher of `view`'s generation, embedding with that generation's model."""
        gen_id = view.generation.gen_id
        with self._lock:
            if gen_id not in self._by_generation:
                self._by_generation[gen_id] = view.embedder.micro_batcher(
                    max_wait_s=self.max_wait_s, max_batch=self.max_batch
                )
            return self._by_generation[gen_id]

    def stats(self) -> dict[str, float]:
        """The figures of every batcher together (`MicroBatcher.stats`)."""
        with self._lock:
            sizes = [n for b in self._by_generation.values() for n in b.batch_sizes]
        return batch_stats(sizes, self.max_wait_s, self.max_batch)

    def close(self) -> None:
        with self._lock:
            for batcher in self._by_generation.values():
                batcher.close()


def describe_store(searcher) -> dict:
    """Tables with their rows and versions, the live generation and its model's card, the
    configured model's card, and the live table's card."""
    from dataclasses import asdict

    st = searcher.store
    tables = []
    for name in sorted(st.table_names()):
        table = st.db.open_table(name)
        tables.append({"name": name, "rows": table.count_rows(), "version": int(table.version)})
    try:
        view = searcher.pinned()
    except CorpusmillError:  # nothing live yet
        view = None
    live = None
    if view is not None and view.generation is not None:
        gen = view.generation
        live = {
            "id": gen.gen_id,
            "model_id": gen.model_id,
            "card": asdict(gen.card),
            "tables": gen.tables(),
        }
    return {
        "db": st.uri,
        "tables": tables,
        "live_generation": live,
        "model": asdict(searcher.embedder.card),
        "embeddings_card": None if view is None else table_card(view.table.schema),
    }


def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    max_wait_s: float = DEFAULT_WAIT_S,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> None:
    """Load the models once, then serve until interrupted."""
    import uvicorn

    from corpusmill.model import Model
    from corpusmill.search import Searcher

    token = settings.api_token or None
    check_bind(host, token)
    embedder = Model(settings.embedder_spec()).load()  # now, not on the first request
    reranker = Model(settings.reranker_spec())
    if reranker.configured:
        reranker.load()
    searcher = Searcher(
        settings.db, embedder=embedder, reranker=reranker, storage_options=settings.storage_options
    )
    app = create_app(
        searcher,
        token=token,
        max_wait_s=max_wait_s,
        max_batch=max_batch,
        default_candidates=settings.rerank_k,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", lifespan="on")
