"""`corpusmill serve`: the store as an HTTP JSON service, the model resident.

    corpusmill serve                          # 127.0.0.1:8000, OpenAPI docs at /docs
    curl -s localhost:8000/search -H 'content-type: application/json' \\
         -d '{"query": "how do I catch an exception", "k": 3, "mode": "hybrid"}'

Endpoints: POST /search, POST /search/batch, GET /health, GET /store, GET /metrics
(app/metrics.py), and the OpenAI-compatible POST /v1/embeddings, GET /v1/models and the
infinity/Cohere-shaped POST /v1/rerank (app/openai_api.py). Hits carry the same fields as
`corpusmill search --json` (`Hit.as_dict()`).

Layers: this module and app/ are HTTP (routes, validation, auth, limits, metrics); the
queue and the micro-batches are the engine's (`Model.micro_batcher`,
corpusmill/engine/microbatch.py); the forward is the model's. A request asks
`Resident.current()` once (app/resident.py) for the models and the table it answers from.

- One model load per process (`corpusmill.model.Model`, from the settings read once by
  app/cli.py); single queries and /v1/embeddings inputs are embedded in micro-batches, a
  batch request in one pass of the embedder (`Searcher.search_many`); all reach the
  forward through the batch engine.
- Fresh reads: every request pins the live generation at the latest committed version of
  its table (`Resident.current()`, `Searcher.pinned()`), fixed for that request; an ingest
  commits a partition's rows in one commit, so a request sees all of a document's chunks or
  none of them. When the live pointer moves (a promotion, a rollback), the next request
  pins the new generation, loads its model once if it is new to this process, and embeds
  its query with it: one micro-batcher per model, so a query vector always meets the table
  of the model that made it. Each search answer names its generation.
- Safe by default: bodies validated (422 naming each bad field, unknown fields refused;
  400 in the OpenAI shape on /v1/), `k`, `candidates`, query length and batch size
  bounded, bodies over MAX_BODY_BYTES get 413, filters become LanceDB expressions
  (`build_filter`); back-pressure (app/limits.py): past the in-flight bounds, 429 with
  Retry-After; with a token (CORPUSMILL_API_TOKEN) every request but /health must carry
  `Authorization: Bearer <token>`; binding anything but loopback without one is refused
  (app/auth.py).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Annotated, Literal

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api_errors import APIError, error_body, is_openai_path
from app.auth import AUTHORIZED, check_bind, guard
from app.limits import Admission, Limits
from app.metrics import CONTENT_TYPE_LATEST, ServiceMetrics
from app.openai_api import add_openai_routes
from app.resident import Resident, Unavailable
from corpusmill.config import Settings
from corpusmill.engine.microbatch import DEFAULT_MAX_BATCH, DEFAULT_WAIT_S
from corpusmill.errors import CorpusmillError
from corpusmill.ids import ALL_PARTITIONS
from corpusmill.search.fusion import DEFAULT_FUSION
from corpusmill.store import table_card

MAX_K = 1000  # as deep as `make eval` searches; deeper is a table dump, not a search
MAX_CANDIDATES = 200  # hits a rerank rescores: each is a forward pair
MAX_QUERY_CHARS = 2000  # far past the model's 256-token window
MAX_BATCH_QUERIES = 1000
# 2 MiB: a full /search/batch of long queries, or a /v1/embeddings request at its token
# limit (131,072 tokens of JSON-escaped text), fits with room to spare.
MAX_BODY_BYTES = 2 << 20


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
    limits: Limits | None = None,
):
    """The ASGI app over `searcher` (a `corpusmill.search.Searcher` with its models): the
    FastAPI app behind the metrics, the token, the in-flight bound and the body-size guard
    (`.app` reaches the FastAPI app). `limits`: the back-pressure settings (default: those
    of `Settings()`)."""
    limits = limits or Limits.from_settings(Settings())
    admission = Admission(limits)
    metrics = ServiceMetrics()
    resident = Resident(
        searcher, max_wait_s=max_wait_s, max_batch=max_batch, on_batch=metrics.batch_size.observe
    )
    metrics.watch(
        queue_depth=resident.pending,
        inflight_requests=lambda: admission.requests,
        inflight_tokens=lambda: admission.tokens,
        table_version=resident.table_version,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        resident.close()

    app = FastAPI(title="corpusmill", summary="Search a corpusmill store", lifespan=lifespan)
    app.state.resident = resident
    app.state.admission = admission

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
        if is_openai_path(request.url.path):  # the OpenAI API answers 400, one message
            message = "; ".join(f"{f['field']}: {f['error']}" for f in fields)
            return _error(request, 400, f"invalid request: {message}", fields[0]["field"])
        return JSONResponse({"error": "invalid request", "fields": fields}, status_code=422)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return _error(request, exc.status, exc.message, exc.param, exc.code, exc.headers)

    @app.exception_handler(CorpusmillError)
    async def _refused(request: Request, exc: CorpusmillError):
        return _error(request, 400, str(exc))

    @app.exception_handler(Unavailable)
    async def _unavailable(request: Request, exc: Unavailable):
        return _error(request, 503, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if is_openai_path(request.url.path):
            return _error(request, exc.status_code, str(exc.detail), headers=exc.headers)
        return await http_exception_handler(request, exc)

    @app.post("/search")
    async def search(body: SearchRequest) -> dict:
        gen = await run_in_threadpool(resident.current)
        view = gen.pinned()
        wants_vector = view.needs_vector(body.mode, body.rerank)
        vector = await gen.batcher.embed(body.query) if wants_vector else None
        opts = body.options(default_candidates)
        hits = await run_in_threadpool(view.search, body.query, vector=vector, **opts)
        return {
            "hits": [h.as_dict() for h in hits],
            "table_version": view.table.version,
            "generation": gen.generation_id,
        }

    @app.post("/search/batch")
    async def search_batch(body: BatchRequest) -> dict:
        gen = await run_in_threadpool(resident.current)
        view = gen.pinned()
        opts = body.options(default_candidates)
        texts = [q.text for q in body.queries]
        per_query = await run_in_threadpool(view.search_many, texts, **opts)
        return {
            "results": [
                {"id": q.id, "hits": [h.as_dict() for h in hits]}
                for q, hits in zip(body.queries, per_query, strict=True)
            ],
            "table_version": view.table.version,
            "generation": gen.generation_id,
        }

    @app.get("/health")
    async def health(request: Request) -> dict:
        if not request.scope.get(AUTHORIZED, True):  # open to probes: say only that it is up
            return {"status": "ok"}
        gen = await run_in_threadpool(resident.current)
        return {"status": "ok", "model": gen.model_id, **resident.stats()}

    @app.get("/store")
    async def store() -> dict:
        return await run_in_threadpool(describe_store, resident.searcher)

    @app.get("/metrics")
    async def prometheus() -> Response:
        body = await run_in_threadpool(metrics.render)  # reads the table's version
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    add_openai_routes(app, resident, admission, metrics)
    guarded = guard(app, token=token, max_body_bytes=max_body_bytes, admission=admission)
    measured = metrics.middleware(guarded, lambda: [getattr(r, "path", "") for r in app.routes])
    measured.app = app  # the FastAPI app, as `guard` gives it
    return measured


def _error(request: Request, status: int, message: str, param=None, code=None, headers=None):
    body = error_body(request.url.path, status, message, param, code)
    return JSONResponse(body, status_code=status, headers=headers)


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
    # The store with the configured storage options: an s3:// store on a custom endpoint
    # needs them to connect at all.
    searcher = Searcher(
        settings.db,
        embedder=embedder,
        reranker=reranker,
        storage_options=settings.storage_options,
    )
    app = create_app(
        searcher,
        token=token,
        max_wait_s=max_wait_s,
        max_batch=max_batch,
        default_candidates=settings.rerank_k,
        limits=Limits.from_settings(settings),
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", lifespan="on")
