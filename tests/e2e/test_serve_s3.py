"""`corpusmill serve` against an `s3://` store on the local S3 server (moto on 127.0.0.1):
the service connects with CORPUSMILL_STORAGE_OPTIONS (endpoint, keys, allow_http), as
every other connection does, and answers /search as the Searcher does over the same store."""

from __future__ import annotations

import json

import httpx
import pytest

from corpusmill.model import Model, ModelSpec
from corpusmill.search import Searcher
from tests.e2e.serving import ServeProcess, make_store, serve_env

DOCS = {
    f"notes#{topic}-{n}": f"{topic} note {n}: how a {topic} works, part {n}"
    for topic in ("exception", "generator", "decorator", "lambda")
    for n in range(3)
}


@pytest.mark.slow
def test_serve_on_an_s3_store_answers_search(s3_store, tiny_embedder_path):
    uri, options = s3_store
    embedder = Model(ModelSpec(path=str(tiny_embedder_path), dtype="float32"))
    store = make_store(uri, embedder, DOCS, storage_options=options)
    env = serve_env(store.uri, tiny_embedder_path, CORPUSMILL_STORAGE_OPTIONS=json.dumps(options))
    reference = Searcher(uri, embedder=embedder, storage_options=options)
    with ServeProcess(env) as service:
        for mode in ("vector", "hybrid"):
            r = httpx.post(
                f"{service.url}/search", json={"query": "generator", "k": 4, "mode": mode}
            )
            assert r.status_code == 200, r.text
            want = reference.search("generator", k=4, mode=mode)
            assert [h["chunk_id"] for h in r.json()["hits"]] == [h.chunk_id for h in want]
            assert r.json()["table_version"] == reference.table.version
        tables = {t["name"]: t for t in httpx.get(f"{service.url}/store").json()["tables"]}
        assert tables["embeddings"]["rows"] == len(DOCS)
