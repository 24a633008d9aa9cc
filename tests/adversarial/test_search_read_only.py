"""Search never writes (issue 27, item 2): the indexes a query needs are built by the
writer (the embeddings step of every ingest, upkeep), never by a reader; a store that
lacks one answers with a clear error, never a 500 and never a commit.

Real parts: the tiny real bi-encoder, a store written by a real `ingest` run, the
`corpusmill` CLI in-process, and the service over real HTTP on 127.0.0.1 (uvicorn)."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from app.cli import main
from app.serve import create_app
from corpusmill.errors import StoreError
from corpusmill.model import Model, ModelSpec
from corpusmill.search import Searcher
from corpusmill.store import Store
from corpusmill.store.upkeep import has_fts_index
from tests.adversarial.conftest import cli_env as user_env
from tests.e2e.serving import Service
from tests.runs import ingest, tiny_settings

TOPICS = ["exception", "context manager", "lambda", "generator", "decorator", "iterator"]
MODES = [
    {"mode": "vector"},
    {"mode": "fts"},
    {"mode": "hybrid"},
    {"mode": "hybrid", "fusion": "rrf"},
    {"mode": "fts", "rerank": True, "candidates": 5},
]


def every_file(root: str) -> dict[str, tuple[str, float]]:
    """Every file under the store, lock files too, with its content hash and mtime."""
    return {
        str(p.relative_to(root)): (
            hashlib.blake2b(p.read_bytes(), digest_size=16).hexdigest(),
            p.stat().st_mtime,
        )
        for p in sorted(Path(root).rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def fresh_store(tmp_path, tiny_embedder_path) -> str:
    """A store just written by one `ingest`, nothing run on it since."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, topic in enumerate(TOPICS):
        (corpus / f"{i}.txt").write_text(f"how a {topic} works in python, note {i} on {topic}")
    db = str(tmp_path / "db")
    summary = ingest([corpus], tiny_settings(db, tiny_embedder_path))
    assert summary["success"] and summary["chunks"] >= len(TOPICS)
    return db


@pytest.fixture
def cli_env(monkeypatch, fresh_store, tiny_embedder_path):
    user_env(monkeypatch, fresh_store, tiny_embedder_path)
    return fresh_store


def test_the_ingest_builds_the_full_text_index(fresh_store):
    table = Store(fresh_store).open("embeddings")
    assert has_fts_index(table)


@pytest.mark.parametrize("mode", ["fts", "hybrid", "vector"])
def test_search_changes_no_file_of_the_store(cli_env, capsys, mode):
    before = every_file(cli_env)
    assert main(["search", "how a lambda works", "--mode", mode, "--json"]) == 0
    assert capsys.readouterr().out.startswith("[{")
    assert every_file(cli_env) == before


def test_a_store_without_the_index_is_refused_clearly_and_left_alone(
    cli_env, capsys, tiny_embedder_path
):
    """A store written before the writer built the index (here: the index dropped)."""
    table = Store(cli_env).open("embeddings")
    for idx in table.list_indices():
        table.drop_index(idx.name)
    before = every_file(cli_env)
    for mode in ("fts", "hybrid"):
        code = main(["search", "how a lambda works", "--mode", mode])
        err = capsys.readouterr().err
        assert code == StoreError.exit_code, err
        assert "full-text index" in err and "corpusmill ingest" in err
    assert main(["search", "how a lambda works", "--mode", "vector"]) == 0
    assert every_file(cli_env) == before
    embedder = Model(ModelSpec(path=str(tiny_embedder_path), dtype="float32"))
    app = create_app(Searcher(cli_env, embedder=embedder))
    with Service(app) as service, httpx.Client(base_url=service.url, timeout=60) as client:
        r = client.post("/search", json={"query": "lambda", "mode": "fts"})
        assert r.status_code < 500 and "full-text index" in r.json()["error"]
    assert every_file(cli_env) == before
    # The next ingest (nothing changed) is a writer: it builds the index again.
    assert main(["ingest", str(Path(cli_env).parent / "corpus"), "--json"]) == 0
    assert has_fts_index(Store(cli_env).open("embeddings"))


def test_twenty_concurrent_first_queries_of_every_mode_all_succeed(fresh_store, tiny_embedder_path):
    """The issue's case: 20 clients at once on a store nobody has searched yet, every
    mode; all released together by a barrier, so the first queries overlap."""
    embedder = Model(ModelSpec(path=str(tiny_embedder_path), dtype="float32"))
    before = every_file(fresh_store)
    app = create_app(Searcher(fresh_store, embedder=embedder))
    with Service(app) as service:
        for options in MODES:
            gate = threading.Barrier(20)

            def one(n: int, options=options, gate=gate) -> tuple[int, int, str]:
                with httpx.Client(base_url=service.url, timeout=120) as c:
                    gate.wait(timeout=60)
                    body = {"query": f"{TOPICS[n % len(TOPICS)]} in python", "k": 3, **options}
                    r = c.post("/search", json=body)
                    return r.status_code, len(r.json().get("hits", [])), r.text

            with ThreadPoolExecutor(20) as pool:
                answers = list(pool.map(one, range(20)))
            assert [code for code, _, _ in answers] == [200] * 20, answers
            assert all(n > 0 for _, n, _ in answers), (options, answers)
    assert every_file(fresh_store) == before
