"""The routes applications already speak, over real HTTP on 127.0.0.1, with their own
clients: the official `openai` client on /v1/embeddings and /v1/models, LanceDB's embedding
registry (its `openai` function) on the same route, /v1/rerank against the Python API's
scorer, and /metrics read back with prometheus_client's own parser.

The store is written by a real ingest (the asset graph, the tiny real bi-encoder in
float32), so "what corpusmill stores" is what an ingest stored."""

from __future__ import annotations

import base64
from collections import Counter

import httpx
import numpy as np
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.serve import create_app
from corpusmill.model import LOADS, Model, ModelSpec
from corpusmill.rerank import PairScorer
from corpusmill.search import Searcher
from corpusmill.store import Store
from tests.assets.corpora import write_corpus
from tests.e2e.serving import Service
from tests.runs import ingest, tiny_settings


@pytest.fixture(scope="module")
def stored(tmp_path_factory, tiny_embedder_path):
    """A store an ingest wrote (26 small files, over 100 chunks), and its (text, vector)s."""
    root = tmp_path_factory.mktemp("openai")
    corpus = write_corpus(root / "corpus", n_docs=26, min_sentences=5)
    settings = tiny_settings(root / "db", tiny_embedder_path)
    assert ingest([corpus], settings)["success"]
    rows = Store(settings.db).scan("embeddings", ["chunk_id", "text", "vector"]).to_pylist()
    rows.sort(key=lambda r: r["chunk_id"])
    assert len({r["text"] for r in rows}) >= 100
    return settings.db, rows


@pytest.fixture(scope="module")
def embedder(tiny_embedder_path):
    return Model(ModelSpec(path=str(tiny_embedder_path), dtype="float32")).load()


@pytest.fixture(scope="module")
def cross_encoder(tiny_cross_encoder_path):
    spec = ModelSpec(path=str(tiny_cross_encoder_path), kind="cross-encoder", dtype="float32")
    return Model(spec).load()


@pytest.fixture(scope="module")
def served(stored, embedder, cross_encoder):
    """The service with a cross-encoder configured: (base URL, its searcher)."""
    db, _ = stored
    searcher = Searcher(db, embedder=embedder, reranker=cross_encoder)
    app = create_app(searcher)
    with Service(app) as service:
        yield service.url, searcher


@pytest.fixture(scope="module")
def client(served):
    url, _ = served
    with openai.OpenAI(base_url=f"{url}/v1", api_key="not-checked", max_retries=0) as c:
        yield c


def unit(rows) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def assert_same_vectors(got, want) -> None:
    """Each vector at cosine >= 0.9999 to its own stored vector, and nearer to it than to
    any other stored text's (random tiny-model vectors are close to each other, so the
    cosine alone would not tell two texts apart)."""
    got, want = unit(got), unit(want)
    cosines = got @ want.T
    assert np.diag(cosines).min() >= 0.9999, np.diag(cosines).min()
    assert (cosines.argmax(axis=1) == np.arange(len(got))).all()
    assert np.allclose(got, want, atol=1e-5)


def distinct(rows, n):
    seen: dict[str, list[float]] = {}
    for r in rows:
        seen.setdefault(r["text"], r["vector"])
    texts = list(seen)[:n]
    return texts, [seen[t] for t in texts]


def test_openai_client_gets_the_stored_vectors_for_a_string_a_list_and_base64(
    client, stored, embedder
):
    _, rows = stored
    model = embedder.card.model_id
    texts, vectors = distinct(rows, 100)
    assert len(texts) == 100

    one = client.embeddings.create(input=texts[0], model=model, encoding_format="float")
    assert one.object == "list" and one.model == model and len(one.data) == 1
    assert_same_vectors([one.data[0].embedding], vectors[:1])

    many = client.embeddings.create(input=texts, model=model, encoding_format="float")
    assert [d.index for d in many.data] == list(range(100))
    assert_same_vectors([d.embedding for d in many.data], vectors)
    # usage: every token the model read, special tokens included
    counted = sum(len(t["input_ids"]) for t in embedder.tokens.tokenize(texts))
    assert many.usage.prompt_tokens == many.usage.total_tokens == counted

    # base64 asked for: strings of little-endian float32, decoded here
    b64 = client.embeddings.create(input=texts[:10], model=model, encoding_format="base64")
    decoded = [np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in b64.data]
    assert_same_vectors(decoded, vectors[:10])
    # and the client's default: it asks for base64 and decodes it itself
    default = client.embeddings.create(input=texts[:10], model=model)
    assert_same_vectors([d.embedding for d in default.data], vectors[:10])


def test_token_arrays_embed_as_their_text_does(client, stored, embedder):
    _, rows = stored
    texts, vectors = distinct(rows, 3)
    model = embedder.card.model_id
    bare = [embedder.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    got = client.embeddings.create(input=bare, model=model, encoding_format="float")
    assert_same_vectors([d.embedding for d in got.data], vectors)
    single = client.embeddings.create(input=bare[0], model=model, encoding_format="float")
    assert_same_vectors([single.data[0].embedding], vectors[:1])
    assert single.usage.prompt_tokens == len(bare[0]) + 2  # [CLS] ... [SEP]


def test_models_lists_what_is_served(client, embedder, cross_encoder):
    listed = {m.id: m for m in client.models.list().data}
    assert set(listed) == {embedder.card.model_id, cross_encoder.card.model_id}
    assert listed[embedder.card.model_id].owned_by == "corpusmill"


def test_errors_come_in_the_openai_shape(client, served, embedder, cross_encoder):
    url, _ = served
    model = embedder.card.model_id
    with pytest.raises(openai.NotFoundError) as e:
        client.embeddings.create(input="x", model="text-embedding-ada-002")
    assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as e:  # a reranker does not embed
        client.embeddings.create(input="x", model=cross_encoder.card.model_id)
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(input="x", model=model, dimensions=16)
    assert e.value.body["param"] == "dimensions" and "dimensions" in e.value.body["message"]
    same = client.embeddings.create(input="x", model=model, dimensions=embedder.card.dimension)
    assert len(same.data[0].embedding) == embedder.card.dimension  # its own size is fine
    long = "word " * 200  # the tiny model reads 64 tokens: refused, never cut
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(input=["short", long], model=model)
    assert e.value.body["code"] == "context_length_exceeded"
    assert "input[1]" in e.value.body["message"]
    for bad in ("", [], [""], [[]], [10**9], ["a", 1]):
        with pytest.raises(openai.BadRequestError) as e:
            client.embeddings.create(input=bad, model=model)  # type: ignore[arg-type]
        assert e.value.body["type"] == "invalid_request_error"
    r = httpx.post(f"{url}/v1/embeddings", json={"input": "x", "model": model, "top": 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "top"
    r = httpx.post(f"{url}/v1/nowhere", json={})
    assert r.status_code == 404 and "message" in r.json()["error"]


def test_dimensions_cut_a_matryoshka_model(tmp_path):
    """A model whose card says it was trained with a Matryoshka loss: `dimensions` gives the
    first d numbers of its vector, re-normalised. (A store with no generation yet: the
    service embeds with the configured model; over a store it serves the live one's.)"""
    from tools.tiny_models import save_tiny_embedder

    path = save_tiny_embedder(tmp_path / "nested", seed=3)
    (path / "README.md").write_text("---\ntags:\n- loss:MatryoshkaLoss\n---\n# nested\n")
    model = Model(ModelSpec(path=str(path), dtype="float32"))
    with (
        Service(create_app(Searcher(str(tmp_path / "db"), embedder=model))) as service,
        openai.OpenAI(base_url=f"{service.url}/v1", api_key="k", max_retries=0) as c,
    ):
        texts = ["a first text", "and a second one"]
        full = c.embeddings.create(input=texts, model="nested", encoding_format="float")
        cut = c.embeddings.create(input=texts, model="nested", dimensions=8)
        for f, d in zip(full.data, cut.data, strict=True):
            assert len(d.embedding) == 8
            assert np.allclose(d.embedding, unit(f.embedding[:8]), atol=1e-6)
        with pytest.raises(openai.BadRequestError):
            c.embeddings.create(input=texts, model="nested", dimensions=10_000)


def test_lancedb_registry_openai_function_embeds_queries_for_the_corpusmill_table(stored, embedder):
    """The recipe in docs/DEPLOY.md: LanceDB's `openai` embedding function pointed at the service
    (with a token: the registry takes it as a variable) embeds a query; searching the
    corpusmill table with it finds what `Searcher` finds."""
    import lancedb
    from lancedb.embeddings import get_registry

    db, _ = stored
    app = create_app(Searcher(db, embedder=embedder), token="a-long-enough-token")
    registry = get_registry()
    registry.set_var("corpusmill_token", "a-long-enough-token")
    table = lancedb.connect(db).open_table("embeddings")
    reference = Searcher(db, embedder=embedder)
    with Service(app) as service:
        func = registry.get("openai").create(
            name=embedder.card.model_id,
            base_url=f"{service.url}/v1",
            api_key="$var:corpusmill_token",
        )
        for query in ("topic3 sentence about item", "item 12", "topic20"):
            qvec = func.compute_query_embeddings(query)[0]
            assert_same_vectors([qvec], embedder.embed([query]))  # the query model's vector
            rows = table.search(qvec).distance_type("cosine").limit(5).to_list()
            want = reference.search(query, k=5, mode="vector")
            assert [r["chunk_id"] for r in rows] == [h.chunk_id for h in want]


def test_rerank_orders_as_the_python_api_does(served, stored, embedder, cross_encoder):
    url, _ = served
    _, rows = stored
    docs, _ = distinct(rows, 30)
    scorer = PairScorer(embedder, cross_encoder)
    for query in ("topic4 sentence", "item 30 about topic7"):
        scores = scorer.score([(query, d) for d in docs])
        want = sorted(range(len(docs)), key=lambda i: (-float(scores[i]), i))
        r = httpx.post(f"{url}/v1/rerank", json={"query": query, "documents": docs})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["scorer"] == "cross-encoder" and body["model"] == cross_encoder.card.model_id
        assert [x["index"] for x in body["results"]] == want
        rel = [x["relevance_score"] for x in body["results"]]
        assert all(0 < s < 1 for s in rel) and rel == sorted(rel, reverse=True)
        assert body["usage"]["total_tokens"] > 0
        # top_n, documents as objects, return_documents, raw scores
        objects = [{"text": d} for d in docs]
        r = httpx.post(
            f"{url}/v1/rerank",
            json={
                "query": query,
                "documents": objects,
                "top_n": 5,
                "return_documents": True,
                "raw_scores": True,
                "model": cross_encoder.card.model_id,
            },
        )
        top = r.json()["results"]
        assert [x["index"] for x in top] == want[:5]
        assert [x["document"]["text"] for x in top] == [docs[i] for i in want[:5]]
        assert [x["relevance_score"] for x in top] == pytest.approx(
            [float(scores[i]) for i in want[:5]], abs=1e-4
        )
    r = httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a"], "model": "nope"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = httpx.post(f"{url}/v1/rerank", json={"query": " ", "documents": ["a"]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "query"


def test_rerank_with_the_bi_encoder_fallback_names_it(stored, embedder):
    db, rows = stored
    docs, _ = distinct(rows, 20)
    with Service(create_app(Searcher(db, embedder=embedder))) as service:
        r = httpx.post(f"{service.url}/v1/rerank", json={"query": "topic9", "documents": docs})
    body = r.json()
    assert body["scorer"] == "bi-encoder" and body["model"] == embedder.card.model_id
    scores = PairScorer(embedder).score([("topic9", d) for d in docs])
    assert [x["index"] for x in body["results"]] == sorted(
        range(len(docs)), key=lambda i: (-float(scores[i]), i)
    )


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of /metrics, parsed by prometheus_client's own text parser."""
    r = httpx.get(f"{url}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def delta(before, after, name: str, **labels) -> float:
    key = (name, frozenset({k: str(v) for k, v in labels.items()}.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_metrics_counters_move_by_what_was_asked(served, stored, embedder):
    url, searcher = served
    _, rows = stored
    texts, _ = distinct(rows, 12)
    model = embedder.card.model_id
    health0 = httpx.get(f"{url}/health").json()
    before = scrape(url)
    used = 0
    with httpx.Client(base_url=url, timeout=60) as c:
        for batch in (texts[:1], texts[:5], texts):  # 3 answered, 18 inputs
            r = c.post("/v1/embeddings", json={"input": batch, "model": model})
            used += r.json()["usage"]["total_tokens"]
        assert c.post("/v1/embeddings", json={"input": "x", "model": "nope"}).status_code == 404
        assert c.post("/v1/embeddings", json={"input": 3, "model": model}).status_code == 400
        for _ in range(2):
            r = c.post("/v1/rerank", json={"query": "topic1", "documents": texts[:4]})
            assert r.status_code == 200
        assert c.post("/search", json={"query": "topic2 sentence"}).status_code == 200
        assert c.get("/nowhere").status_code == 404
    after = scrape(url)
    health1 = httpx.get(f"{url}/health").json()

    requests = "corpusmill_http_requests_total"
    errors = "corpusmill_http_errors_total"
    emb = {"route": "/v1/embeddings", "method": "POST"}
    assert delta(before, after, requests, **emb, status=200) == 3
    assert delta(before, after, requests, **emb, status=404) == 1
    assert delta(before, after, requests, **emb, status=400) == 1
    assert delta(before, after, errors, **emb, status=404) == 1
    assert delta(before, after, errors, **emb, status=400) == 1
    assert delta(before, after, errors, **emb, status=200) == 0
    rerank = {"route": "/v1/rerank", "method": "POST", "status": 200}
    assert delta(before, after, requests, **rerank) == 2
    assert delta(before, after, requests, route="/search", method="POST", status=200) == 1
    assert delta(before, after, requests, route="other", method="GET", status=404) == 1
    assert delta(before, after, requests, route="/metrics", method="GET", status=200) == 1
    latency = "corpusmill_http_request_duration_seconds_count"
    assert delta(before, after, latency, route="/v1/embeddings") == 5
    assert delta(before, after, "corpusmill_tokens_embedded_total") == used
    assert delta(before, after, "corpusmill_inputs_embedded_total") == 18
    assert delta(before, after, "corpusmill_tokens_scored_total") > 0
    # the micro-batch histogram counts every forward the batcher ran, and every text
    forwards = health1["batches"] - health0["batches"]
    assert delta(before, after, "corpusmill_microbatch_size_count") == forwards > 0
    assert delta(before, after, "corpusmill_microbatch_size_sum") == (
        health1["queries"] - health0["queries"]
    )
    assert (
        after[("corpusmill_model_loads_total", frozenset({("kind", "embedder")}))]
        == (LOADS["embedder"])
    )
    version = after[("corpusmill_table_version", frozenset({("table", "embeddings")}))]
    assert version == searcher.table.version
    assert after[("corpusmill_microbatch_queue_depth", frozenset())] == 0
    assert after[("corpusmill_inflight_tokens", frozenset())] == 0
    assert after[("process_resident_memory_bytes", frozenset())] > 0


class GatedModel(Model):
    """The real tiny model, whose forwards wait for `gate` (TEST-ONLY: holds requests in
    flight so the test decides what is in flight when the next one arrives)."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        import threading

        self.gate = threading.Event()

    def embed(self, texts):
        assert self.gate.wait(60), "the test never opened the gate"
        return super().embed(texts)


def test_past_the_in_flight_bounds_429_with_retry_after_and_every_accepted_answer_right(
    stored, tiny_embedder_path
):
    from concurrent.futures import ThreadPoolExecutor

    from app.limits import Limits
    from tests.waiting import wait_for

    db, rows = stored
    texts, vectors = distinct(rows, 8)
    model = GatedModel(ModelSpec(path=str(tiny_embedder_path), dtype="float32"))
    limits = Limits(
        max_inflight=3, max_inflight_tokens=10_000, max_inputs=64, max_request_tokens=10_000
    )
    app = create_app(Searcher(db, embedder=model), limits=limits)
    name = model.card.model_id
    with Service(app) as service, ThreadPoolExecutor(8) as pool:

        def post(i: int) -> httpx.Response:
            body = {"input": texts[i : i + 1], "model": name, "encoding_format": "float"}
            return httpx.post(f"{service.url}/v1/embeddings", json=body, timeout=60)

        futures = [pool.submit(post, i) for i in range(8)]
        # Nothing can finish while the gate is shut: the 3 admitted wait, the 5 others are
        # refused at once.
        wait_for(lambda: sum(f.done() for f in futures) == 5, 60, "5 refusals")
        refused = [f.result() for f in futures if f.done()]
        assert [r.status_code for r in refused] == [429] * 5
        for r in refused:
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["error"]["code"] == "rate_limit_exceeded"
        model.gate.set()
        answered = {i: f.result() for i, f in enumerate(futures) if f.result().status_code == 200}
        assert len(answered) == 3
        for i, r in answered.items():
            assert_same_vectors([r.json()["data"][0]["embedding"]], vectors[i : i + 1])
        after = scrape(service.url)
        assert delta({}, after, "corpusmill_requests_rejected_total", bound="requests") == 5
        # The official client hears a RateLimitError (it would retry after Retry-After).
        model.gate.clear()
        with openai.OpenAI(base_url=f"{service.url}/v1", api_key="k", max_retries=0) as c:
            held = [pool.submit(post, i) for i in range(3)]
            wait_for(lambda: app.app.state.admission.requests == 3, 60, "3 requests in flight")
            with pytest.raises(openai.RateLimitError):
                c.embeddings.create(input="x", model=name)
            model.gate.set()
            assert [f.result().status_code for f in held] == [200] * 3


def test_the_token_budget_refuses_what_does_not_fit(stored, tiny_embedder_path):
    from concurrent.futures import ThreadPoolExecutor

    from app.limits import Limits
    from tests.waiting import wait_for

    db, rows = stored
    texts, vectors = distinct(rows, 40)
    model = GatedModel(ModelSpec(path=str(tiny_embedder_path), dtype="float32"))
    per_text = [len(t["input_ids"]) for t in model.tokens.tokenize(texts)]
    # Either half fits alone; the second does not while the first is in flight.
    budget = max(sum(per_text[:20]), sum(per_text[20:])) + 5
    limits = Limits(
        max_inflight=50, max_inflight_tokens=budget, max_inputs=64, max_request_tokens=budget
    )
    app = create_app(Searcher(db, embedder=model), limits=limits)
    name = model.card.model_id
    with Service(app) as service, ThreadPoolExecutor(2) as pool:
        url = f"{service.url}/v1/embeddings"
        first = pool.submit(httpx.post, url, json={"input": texts[:20], "model": name}, timeout=60)
        wait_for(
            lambda: app.app.state.admission.tokens == sum(per_text[:20]), 60, "20 texts in flight"
        )
        r = httpx.post(url, json={"input": texts[20:], "model": name})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        r = httpx.post(url, json={"input": texts, "model": name})  # never fits: 400, not 429
        assert r.status_code == 400 and r.json()["error"]["code"] == "request_too_large"
        r = httpx.post(url, json={"input": ["x"] * 65, "model": name})
        assert (
            r.status_code == 400 and "CORPUSMILL_SERVE_MAX_INPUTS" in r.json()["error"]["message"]
        )
        model.gate.set()
        assert first.result().status_code == 200
        after = scrape(service.url)
        assert delta({}, after, "corpusmill_requests_rejected_total", bound="tokens") == 1
        assert app.app.state.admission.tokens == 0


@pytest.mark.slow
def test_a_burst_past_the_bound_keeps_memory_flat_and_every_answer_right(tmp_path, embedder):
    """`corpusmill serve` as a process with a bound of 2 requests in flight, 48 clients at
    once: some are refused, every accepted one gets its own vectors, and the server's
    resident set after the burst is within 64 MiB of before it."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.e2e.serving import ServeProcess, make_store, serve_env

    docs = {f"doc#{i}": f"text number {i} about topic{i % 7} and item {i * 3}" for i in range(64)}
    store = make_store(tmp_path / "db", embedder, docs)
    texts = list(docs.values())
    want = {t: v for t, v in zip(texts, embedder.embed(texts), strict=True)}
    env = serve_env(store.uri, embedder.path, CORPUSMILL_SERVE_MAX_INFLIGHT="2")
    name = embedder.card.model_id
    with ServeProcess(env) as service:

        def client(n: int) -> Counter:
            seen: Counter = Counter()
            with httpx.Client(base_url=service.url, timeout=60) as c:
                for i in range(10):
                    batch = [texts[(n * 5 + i + j) % len(texts)] for j in range(32)]
                    r = c.post("/v1/embeddings", json={"input": batch, "model": name})
                    seen[r.status_code] += 1
                    if r.status_code == 200:
                        got = [d["embedding"] for d in r.json()["data"]]
                        assert_same_vectors(got, [want[t] for t in batch])
                    else:
                        assert r.status_code == 429 and r.headers["retry-after"], r.text
            return seen

        client(0)  # warm: first shapes, allocator pools
        rss0 = service.rss_bytes()
        with ThreadPoolExecutor(48) as pool:
            seen = sum(pool.map(client, range(48)), Counter())
        rss1 = service.rss_bytes()
        rejected = delta(
            {}, scrape(service.url), "corpusmill_requests_rejected_total", bound="requests"
        )
    assert seen[429] > 0 and seen[200] > 0 and set(seen) == {200, 429}, seen
    assert rejected == seen[429]
    assert rss1 - rss0 < 64 << 20, (rss0 >> 20, rss1 >> 20)
