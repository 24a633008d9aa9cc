"""The routes applications already speak: OpenAI's embeddings and models, Cohere's rerank.

    POST /v1/embeddings   the OpenAI embeddings API: `input` a string, a list of strings,
                          or token-id arrays; `model`; `encoding_format` float | base64;
                          `dimensions` (see below); `user` (ignored). Answers
                          {"object": "list", "data": [{"object": "embedding", "index",
                          "embedding"}], "model", "usage": {"prompt_tokens", "total_tokens"}}
    GET  /v1/models       the served models, in the OpenAI list shape
    POST /v1/rerank       the shape infinity and Cohere use: `query`, `documents` (strings
                          or {"text": ...}), `top_n`, `return_documents`, `raw_scores`,
                          `model`; answers `results` [{"index", "relevance_score",
                          "document": {"text"}}] best first, and `scorer` as /search names it

HTTP only: every input reaches the model through the engine, embeddings through the query
model's micro-batcher (`Serving.batcher`, shared with /search, so concurrent clients
share forwards), rerank pairs through the scorer the Python API uses (`PairScorer`).

- Over-long inputs are refused (400 `context_length_exceeded`), as the OpenAI API does;
  rerank documents are cut to the cross-encoder's window, as Cohere and infinity do.
- `dimensions`: the model's own dimension is always accepted; a smaller one only for a
  model trained to be cut (Matryoshka: its model card says so), the vector cut and
  re-normalised; otherwise 400, as the OpenAI API answers for text-embedding-ada-002.
- `relevance_score`: a cross-encoder's logit through a sigmoid (0..1, as infinity and
  Cohere give; `raw_scores: true` for the logit, the score /search shows); the bi-encoder
  fallback's cosine as it is. The order is the same either way.
- Limits (app/limits.py): inputs per request, tokens per request (400 past them), and the
  token budget in flight (429 with Retry-After).
"""

from __future__ import annotations

import base64
import re
import uuid
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.api_errors import APIError
from app.limits import Admission, Limits
from app.metrics import REJECTED_BY, ServiceMetrics
from app.resident import Resident, Serving
from corpusmill.model import Model


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    input: str | list[str] | list[int] | list[list[int]]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class RerankDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    text: str


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    query: Annotated[str, AfterValidator(_not_blank)]
    documents: list[str | RerankDocument] = Field(min_length=1)
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = False
    raw_scores: bool = False
    model: str | None = None


def add_openai_routes(
    app: FastAPI,
    resident: Resident,
    admission: Admission,
    metrics: ServiceMetrics,
) -> None:
    limits = admission.limits

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingsRequest, request: Request) -> JSONResponse:
        gen = await run_in_threadpool(resident.current)
        _check_embedding_model(body.model, gen)
        dims = _output_dimensions(gen, body.dimensions)
        raw: list = [body.input] if isinstance(body.input, str) else body.input
        _check_count(len(raw), limits, "input")
        if isinstance(raw[0], int):  # one token array
            prepared = await run_in_threadpool(gen.inputs.token_arrays, [raw])
        elif isinstance(raw[0], list):
            prepared = await run_in_threadpool(gen.inputs.token_arrays, raw)
        else:
            prepared = await run_in_threadpool(gen.inputs.texts, raw)
        async with _Reserved(request, admission, prepared.tokens):
            rows = np.stack(await gen.batcher.embed_many(prepared.items))
        if not np.isfinite(rows).all():
            raise APIError(500, "the model failed to embed an input (non-finite vector)")
        rows = _cut(rows, dims, gen.embedder.card.normalize)
        metrics.tokens_embedded.inc(prepared.tokens)
        metrics.inputs_embedded.inc(len(rows))
        data = [
            {"object": "embedding", "index": i, "embedding": _encoded(row, body.encoding_format)}
            for i, row in enumerate(rows)
        ]
        usage = {"prompt_tokens": prepared.tokens, "total_tokens": prepared.tokens}
        return JSONResponse({"object": "list", "data": data, "model": gen.model_id, "usage": usage})

    @app.get("/v1/models")
    async def models() -> dict:
        gen = await run_in_threadpool(resident.current)
        served = [gen.embedder] + ([gen.reranker] if gen.reranker and _cross(gen) else [])
        return {
            "object": "list",
            "data": [
                {
                    "id": m.card.model_id,
                    "object": "model",
                    "created": gen.created,
                    "owned_by": "corpusmill",
                    "kind": m.kind,  # embedder | cross-encoder
                }
                for m in served
            ],
        }

    @app.post("/v1/rerank")
    async def rerank(body: RerankRequest, request: Request) -> JSONResponse:
        gen = await run_in_threadpool(resident.current)
        scorer = gen.scorer()
        if body.model is not None and body.model != scorer.model_id:
            raise _model_not_found(body.model)
        _check_count(len(body.documents), limits, "documents")
        texts = [d if isinstance(d, str) else d.text for d in body.documents]
        pairs = [(body.query, t) for t in texts]
        tokens = await run_in_threadpool(_pair_tokens, gen, scorer.cross, body.query, texts)
        async with _Reserved(request, admission, tokens):
            scores = await run_in_threadpool(scorer.score, pairs)
        if not np.isfinite(scores).all():
            raise APIError(500, "the reranker failed to score a document (non-finite score)")
        used = sum(s.real_tokens for s in scorer.stats)
        metrics.tokens_scored.inc(used)
        shown = 1.0 / (1.0 + np.exp(-scores)) if scorer.cross and not body.raw_scores else scores
        order = sorted(range(len(texts)), key=lambda i: (-float(scores[i]), i))
        results = [
            {"index": i, "relevance_score": float(shown[i])}
            | ({"document": {"text": texts[i]}} if body.return_documents else {})
            for i in order[: body.top_n]
        ]
        return JSONResponse(
            {
                "object": "rerank",
                "id": f"rerank-{uuid.uuid4().hex}",
                "model": scorer.model_id,
                "scorer": scorer.scorer,
                "results": results,
                "usage": {"prompt_tokens": used, "total_tokens": used},
            }
        )


class _Reserved:
    """`async with`: the request's tokens held in the budget until it is answered; 429
    with Retry-After when they do not fit."""

    def __init__(self, request: Request, admission: Admission, tokens: int) -> None:
        self.request, self.admission, self.tokens = request, admission, tokens

    async def __aenter__(self) -> None:
        limit = self.admission.limits.max_request_tokens
        if self.tokens > limit:
            raise APIError(
                400,
                f"this request has {self.tokens} tokens; at most {limit} per request "
                "(CORPUSMILL_SERVE_MAX_REQUEST_TOKENS): split it",
                param="input",
                code="request_too_large",
            )
        if not self.admission.try_reserve(self.tokens):
            self.request.scope[REJECTED_BY] = "tokens"
            raise APIError(
                429,
                f"over {self.admission.limits.max_inflight_tokens} tokens in flight; retry later",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(self.admission.retry_after_s())},
            )

    async def __aexit__(self, exc_type, exc, tb) -> None:
        self.admission.release(self.tokens, answered=exc_type is None)


def _check_count(n: int, limits: Limits, param: str) -> None:
    if n == 0:
        raise APIError(400, f"'{param}' is empty", param=param)
    if n > limits.max_inputs:
        raise APIError(
            400,
            f"'{param}' has {n} items; at most {limits.max_inputs} per request "
            "(CORPUSMILL_SERVE_MAX_INPUTS)",
            param=param,
        )


def _model_not_found(name: str) -> APIError:
    return APIError(
        404,
        f"The model `{name}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


def _cross(gen: Serving) -> bool:
    return gen.reranker is not None and gen.reranker.configured


def _check_embedding_model(name: str, gen: Serving) -> None:
    if name == gen.model_id:
        return
    if _cross(gen) and gen.reranker is not None and name == gen.reranker.card.model_id:
        raise APIError(
            400,
            f"`{name}` is a cross-encoder: it scores pairs (/v1/rerank), it does not embed; "
            f"/v1/embeddings serves `{gen.model_id}`",
            param="model",
        )
    raise _model_not_found(name)


def _output_dimensions(gen: Serving, asked: int | None) -> int:
    full = gen.embedder.card.dimension
    if asked is None or asked == full:
        return full
    if not truncatable(gen.embedder):
        raise APIError(
            400,
            f"This model does not support specifying dimensions: `{gen.model_id}` was not "
            f"trained to be cut (no Matryoshka loss on its model card); it gives {full}",
            param="dimensions",
        )
    if not 1 <= asked <= full:
        raise APIError(400, f"dimensions must be 1..{full}", param="dimensions")
    return asked


def truncatable(model: Model) -> bool:
    """Whether the model was trained so that a prefix of its vector is a good vector
    (Matryoshka representation learning): its model card's front matter (README.md, which
    sentence-transformers writes with tags such as `loss:MatryoshkaLoss`) says so."""
    card = Path(model.path) / "README.md"
    if not card.is_file():
        return False
    text = card.read_text(encoding="utf-8", errors="replace")
    front = re.match(r"\A---\s*\n(.*?)\n---\s*\n", text, re.S)
    return bool(front and re.search("matryoshka", front.group(1), re.I))


def _cut(rows: np.ndarray, dims: int, normalize: bool) -> np.ndarray:
    if dims == rows.shape[1]:
        return rows
    cut = rows[:, :dims]
    if normalize:
        norms = np.linalg.norm(cut, axis=1, keepdims=True)
        cut = cut / np.where(norms == 0, 1.0, norms)
    return cut


def _encoded(row: np.ndarray, encoding_format: str):
    if encoding_format == "base64":  # little-endian float32, as the OpenAI clients decode it
        return base64.b64encode(np.asarray(row, dtype="<f4").tobytes()).decode("ascii")
    return row.tolist()


def _pair_tokens(gen: Serving, cross: bool, query: str, texts: list[str]) -> int:
    """The tokens scoring will put through the model (as the engine will cut them)."""
    if cross and gen.reranker is not None:
        tokenized = gen.reranker.tokens.tokenize([(query, t) for t in texts])
    else:
        tokenized = gen.embedder.tokens.tokenize([query, *texts])
    return sum(len(t["input_ids"]) for t in tokenized)
