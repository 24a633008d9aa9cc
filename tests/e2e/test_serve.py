"""`corpusmill serve` over real HTTP on 127.0.0.1: uvicorn in a thread on a port the OS
picks, a real LanceDB store written with the tiny real bi-encoder, httpx as the client."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from app.auth import check_bind
from app.serve import MAX_BODY_BYTES, create_app
from corpusmill.ids import partition_of
from corpusmill.model import Model, ModelSpec
from corpusmill.search import Searcher
from corpusmill.sync.scope import docs_filter
from tests.e2e.serving import ServeProcess, Service, chunk_rows, make_store, serve_env

TOPICS = ["exception", "context manager", "lambda", "generator", "decorator", "iterator"]
DOCS = {
    f"{src}#{topic.replace(' ', '-')}-{n}": f"{topic} note {n}: how a {topic} works in {src} "
    + " ".join(TOPICS[(i + n + m) % len(TOPICS)] for m in range(3))
    for i, topic in enumerate(TOPICS)
    for n in range(4)
    for src in ("pydoc", "notes")
}
QUERIES = ["catch an exception", "with statement context manager", "anonymous lambda", "generator"]


@pytest.fixture(scope="module")
def embedder(tiny_embedder_path):
    return Model(ModelSpec(path=str(tiny_embedder_path), dtype="float32")).load()


@pytest.fixture(scope="module")
def served(tmp_path_factory, embedder):
    store = make_store(tmp_path_factory.mktemp("serve") / "db", embedder, DOCS)
    app = create_app(Searcher(store.uri, embedder=embedder))
    with Service(app) as service, httpx.Client(base_url=service.url, timeout=60) as client:
        yield client, Searcher(store.uri, embedder=embedder)


def same_hits(got: list[dict], want) -> None:
    assert [h["chunk_id"] for h in got] == [h.chunk_id for h in want]
    for g, w in zip(got, want, strict=True):
        expected = w.as_dict()
        assert g["score"] == pytest.approx(expected.pop("score"), abs=1e-5)
        assert {k: g[k] for k in expected} == expected


CASES = [
    {"mode": "vector"},
    {"mode": "fts"},
    {"mode": "hybrid"},
    {"mode": "hybrid", "fusion": "rrf"},
    {"mode": "hybrid", "source": "notes", "k": 4},
    {"mode": "vector", "partition": partition_of("pydoc#lambda-1"), "k": 3},
    {"mode": "vector", "doc_id": "pydoc#generator-2"},
    {"mode": "fts", "rerank": True, "candidates": 8, "k": 5},
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_search_answers_what_the_searcher_answers(served, case):
    client, reference = served
    for query in QUERIES:
        r = client.post("/search", json={"query": query, **case})
        assert r.status_code == 200, r.text
        want = reference.search(query, **{"k": 10, **case})
        assert want or case.get("doc_id")  # the store answers these queries
        same_hits(r.json()["hits"], want)


def test_hits_say_where_their_chunk_sits(served):
    client, _reference = served
    r = client.post("/search", json={"query": "lambda", "mode": "fts", "source": "notes"})
    hit = r.json()["hits"][0]
    assert hit["doc_id"].startswith("notes#") and hit["page_first"] == 2
    assert (hit["page_last"], hit["section"]) == (3, ["Notes", hit["doc_id"].split("#")[1]])
    r = client.post("/search", json={"query": "lambda", "mode": "fts", "source": "pydoc"})
    hit = r.json()["hits"][0]
    assert (hit["page_first"], hit["page_last"], hit["section"]) == (None, None, None)


def test_batch_answers_each_query_as_the_searcher_does(served):
    client, reference = served
    queries = [{"id": i, "text": q} for i, q in enumerate(QUERIES * 3)]
    for case in ({"mode": "hybrid"}, {"mode": "fts", "k": 3}, {"mode": "vector", "k": 7}):
        r = client.post("/search/batch", json={"queries": queries, **case})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [x["id"] for x in results] == list(range(len(queries)))
        for q, result in zip(queries, results, strict=True):
            same_hits(result["hits"], reference.search(q["text"], **{"k": 10, **case}))


def test_health_and_store_describe_the_service(served):
    client, reference = served
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == reference.embedder.card.model_id
    store = client.get("/store").json()
    tables = {t["name"]: t for t in store["tables"]}
    assert tables["embeddings"]["rows"] == len(DOCS)
    assert tables["embeddings"]["version"] == reference.table.version
    assert store["embeddings_card"]["model_id"] == reference.embedder.card.model_id
    assert client.get("/openapi.json").json()["paths"].keys() >= {"/search", "/search/batch"}


@pytest.mark.slow
def test_eight_concurrent_clients_fifty_queries_each_all_correct(served):
    client, reference = served
    modes = ["vector", "hybrid", "fts"]
    work = [(q, m) for q in QUERIES + [f"{t} in python" for t in TOPICS] for m in modes]
    expected = {(q, m): reference.search(q, k=5, mode=m) for q, m in work}

    def one_client(n: int) -> int:
        ok = 0
        with httpx.Client(base_url=str(client.base_url), timeout=60) as c:
            for i in range(50):
                q, m = work[(n * 7 + i) % len(work)]
                r = c.post("/search", json={"query": q, "k": 5, "mode": m})
                assert r.status_code == 200, r.text
                same_hits(r.json()["hits"], expected[(q, m)])
                ok += 1
        return ok

    before = client.get("/health").json()
    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(one_client, range(8))) == 400
    after = client.get("/health").json()
    # Concurrent single queries shared forwards: fewer forward passes than embedded queries.
    embedded = after["queries"] - before["queries"]
    assert embedded > 0 and after["batches"] - before["batches"] < embedded


@pytest.mark.slow
def test_a_commit_during_the_test_becomes_visible_whole(tmp_path, embedder):
    """A writer commits a 3-chunk document (one merge_insert, as the embeddings asset
    does) while a client keeps asking for it: every answer holds none of its chunks or all
    three, and the last ones hold all three. No restart."""
    store = make_store(tmp_path / "db", embedder, DOCS)
    new_doc = "pydoc#fresh-arrival"
    chunks = [f"fresh arrival part {i} about walrus operators" for i in range(3)]
    seen: list[int] = []
    app = create_app(Searcher(store.uri, embedder=embedder))
    with Service(app) as service, httpx.Client(base_url=service.url, timeout=60) as client:
        body = {"query": "walrus operators", "k": 10, "mode": "hybrid", "doc_id": new_doc}
        assert client.post("/search", json=body).json()["hits"] == []
        version0 = client.get("/store").json()["tables"][0]["version"]

        answered = threading.Event()  # the client has seen the store before the commit

        def write() -> None:
            assert answered.wait(30)
            table = store.open("embeddings")
            rows = chunk_rows(embedder, table, {new_doc: chunks})
            store.replace_rows(table, "chunk_id", rows, docs_filter([new_doc]))

        writer = threading.Thread(target=write)
        writer.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not seen or seen[-1] == 0 or writer.is_alive()):
            r = client.post("/search", json=body)
            assert r.status_code == 200, r.text
            seen.append(len(r.json()["hits"]))
            answered.set()
        writer.join()
        assert set(seen) <= {0, 3}, seen  # never half a document
        assert seen[0] == 0 and seen[-1] == 3
        assert client.post("/search", json=body).json()["table_version"] > version0


@pytest.fixture(scope="module")
def guarded(served, embedder, tmp_path_factory):
    """A second service over the same store, with a token and a small body limit."""
    _, reference = served
    app = create_app(reference, token="s3cret", max_body_bytes=2000)
    with Service(app) as service, httpx.Client(base_url=service.url, timeout=60) as client:
        client.app_under_test = app.app  # type: ignore[attr-defined]
        yield client


BAD = [
    ({"query": "x", "k": 0}, "k"),
    ({"query": "x", "k": 100_000}, "k"),
    ({"query": "x", "k": "10"}, "k"),
    ({"query": "x", "candidates": 100_000, "rerank": True}, "candidates"),
    ({"query": "x", "mode": "semantic"}, "mode"),
    ({"query": "x", "fusion": "linear"}, "fusion"),
    ({"query": "x", "partition": "x' OR '1'='1"}, "partition"),
    ({"query": "x", "sorce": "pydoc"}, "sorce"),
    ({"query": "   "}, "query"),
    ({"query": "x" * 5000}, "query"),
    ({"k": 3}, "query"),
    ({"query": "x", "rerank": "yes"}, "rerank"),
]


@pytest.mark.parametrize(("body", "field"), BAD, ids=[f for _, f in BAD])
def test_bad_search_bodies_are_422_naming_the_field(served, body, field):
    client, _ = served
    r = client.post("/search", json=body)
    assert r.status_code == 422, r.text
    assert field in {f["field"] for f in r.json()["fields"]}


def test_other_bad_requests(served):
    client, _ = served
    r = client.post("/search/batch", json={"queries": []})
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "queries"
    r = client.post("/search/batch", json={"queries": [{"id": 1}]})
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "queries.0.text"
    r = client.post("/search", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "body"
    r = client.post("/search", json={"query": "x" * (MAX_BODY_BYTES + 10)})
    assert r.status_code == 413 and r.json()["field"] == "body"
    assert client.get("/search").status_code == 405
    assert client.post("/nowhere", json={}).status_code == 404


def test_a_query_vector_from_another_model_is_refused(served, tmp_path):
    """The micro-batcher embeds with whatever model the service holds; the vector is still
    checked against the model that wrote the table before it is searched with."""
    from tools.tiny_models import save_tiny_embedder

    _, reference = served
    other = Model(ModelSpec(path=str(save_tiny_embedder(tmp_path / "other", seed=7))))
    app = create_app(Searcher(reference.store, embedder=other))
    with Service(app) as service, httpx.Client(base_url=service.url, timeout=60) as client:
        r = client.post("/search", json={"query": "lambda", "mode": "vector"})
        assert r.status_code == 400 and "another model" in r.json()["error"], r.text
        assert client.post("/search", json={"query": "lambda", "mode": "fts"}).status_code == 200


def test_token_is_checked_on_every_route_but_health(guarded):
    """Every route the app serves (read from the app itself, so a new route is covered the
    day it is added), with no token and with a wrong one: 401. /health alone is open."""
    app = guarded.app_under_test
    routes = [
        (method, route.path)
        for route in app.routes
        for method in sorted(getattr(route, "methods", None) or ())
        if method != "HEAD"
    ]
    assert {p for _, p in routes} >= {
        "/search", "/search/batch", "/store", "/metrics", "/docs", "/openapi.json",
        "/v1/embeddings", "/v1/models", "/v1/rerank",
    }  # fmt: skip
    wrong = {"Authorization": "Bearer s3cre"}
    for method, path in routes:
        for headers in ({}, wrong, {"Authorization": "s3cret"}):
            r = guarded.request(method, path, json={}, headers=headers)
            if path == "/health":  # open to probes, and says no more than that it is up
                assert r.status_code == 200 and r.json() == {"status": "ok"}
            else:
                assert r.status_code == 401, (method, path, headers, r.status_code)
                assert r.headers["www-authenticate"] == "Bearer"
    r = guarded.post("/search", json={"query": "lambda"})
    assert r.status_code == 401 and r.json()["field"] == "Authorization"
    r = guarded.post("/v1/embeddings", json={"input": "lambda", "model": "m"})
    assert r.json()["error"]["code"] == "invalid_api_key"  # the OpenAI shape on /v1/
    right = {"Authorization": "Bearer s3cret"}
    r = guarded.post("/search", json={"query": "lambda", "k": 2}, headers=right)
    assert r.status_code == 200 and len(r.json()["hits"]) == 2
    assert guarded.get("/health", headers=right).json()["model"]
    assert guarded.get("/metrics", headers=right).status_code == 200
    # A chunked upload declares no length: the limit still holds.
    big = (b"x" for _ in range(3000))
    r = guarded.post("/search", content=big, headers={**right, "content-type": "application/json"})
    assert r.status_code == 413


def test_non_loopback_bind_needs_a_token(monkeypatch, capsys, tiny_embedder_path):
    import uvicorn

    from app.cli import main

    binds: list[str] = []
    # Never bind beyond loopback in a test: uvicorn.run records what it was asked instead.
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: binds.append(host))
    monkeypatch.delenv("CORPUSMILL_API_TOKEN", raising=False)
    monkeypatch.setenv("CORPUSMILL_MODEL", str(tiny_embedder_path))
    monkeypatch.setenv("CORPUSMILL_DTYPE", "float32")
    assert main(["serve", "--host", "0.0.0.0"]) == 4  # a configuration error: set the token
    assert "CORPUSMILL_API_TOKEN" in capsys.readouterr().err and binds == []
    monkeypatch.setenv("CORPUSMILL_API_TOKEN", "t0ken")
    assert main(["serve", "--host", "0.0.0.0"]) == 0 and binds == ["0.0.0.0"]
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_bind(host, None)
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.org"):
        with pytest.raises(ValueError, match="CORPUSMILL_API_TOKEN"):
            check_bind(host, None)


@pytest.mark.parametrize(
    ("flags", "wait_s", "max_batch"),
    [([], 0.002, 32), (["--batch-wait-ms", "5", "--max-batch", "7"], 0.005, 7)]
    + [(["--no-microbatch", "--max-batch", "7"], 0.0, 1)],
)
def test_the_batching_flags_reach_the_models_batcher(
    monkeypatch, tmp_path, tiny_embedder_path, flags, wait_s, max_batch
):
    import uvicorn

    from app.cli import main

    apps: list = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: apps.append(app))
    monkeypatch.delenv("CORPUSMILL_API_TOKEN", raising=False)
    monkeypatch.setenv("CORPUSMILL_MODEL", str(tiny_embedder_path))
    monkeypatch.setenv("CORPUSMILL_DTYPE", "float32")
    monkeypatch.setenv("CORPUSMILL_DB", str(tmp_path / "db"))
    assert main(["serve", *flags]) == 0
    # One micro-batcher per model answered with, each made with these settings.
    resident = apps[0].app.state.resident
    (batcher,) = resident.batchers()
    assert (batcher.max_wait_s, batcher.max_batch) == (wait_s, max_batch)
    resident.close()


@pytest.mark.slow
def test_the_serve_command_loads_the_configured_model_and_answers(tmp_path, embedder):
    """`corpusmill serve` as a process (settings from the environment, as a user runs it):
    up on loopback, answers as the Searcher does, stopped by its PID."""
    store = make_store(tmp_path / "db", embedder, DOCS)
    with ServeProcess(serve_env(store.uri, embedder.path)) as service:
        r = httpx.post(
            f"{service.url}/search", json={"query": "anonymous lambda", "mode": "hybrid"}
        )
        assert r.status_code == 200, r.text
        reference = Searcher(store.uri, embedder=embedder)
        same_hits(r.json()["hits"], reference.search("anonymous lambda", k=10, mode="hybrid"))
