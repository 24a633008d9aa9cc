"""The model lifecycle as readers see it: a store built with model A, model B configured;
while B builds, searches and service requests (real HTTP on 127.0.0.1) keep answering
from A, every one; after promotion the same service answers from B without a restart;
rollback returns to A; drop removes A's tables and nothing else. B has A's dimension, or
another one. Tiny real models, a real LanceDB directory, events instead of sleeps."""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pytest

from app.serve import create_app
from corpusmill.lifecycle.operations import describe, drop, promote, rollback
from corpusmill.model import Model
from corpusmill.model.pool import ModelPool
from corpusmill.search import Searcher
from corpusmill.store import Store
from corpusmill.store.generations import read_registry
from tests.assets.corpora import write_corpus
from tests.e2e.test_serve import Service
from tests.generations import OTHER_MODELS, live_of, save_model_b, table_versions
from tests.runs import ingest, tiny_settings

QUERIES = ["topic3 sentence about item", "item 12", "topic7", "sentence 2 about item 0"]
MODES = ("vector", "hybrid")


def answers_of(db: str, gen: str, embedder: Model) -> dict:
    """(query, mode) -> [(chunk_id, score)] from generation `gen`, named explicitly."""
    searcher = Searcher(db, embedder=embedder, generation=gen)
    return {
        (q, m): [(h.chunk_id, round(h.score, 4)) for h in searcher.search(q, k=5, mode=m)]
        for q in QUERIES
        for m in MODES
    }


def ask(client: httpx.Client, searcher: Searcher) -> list[tuple[str, tuple, list]]:
    """Every query in every mode, through the service and through the Searcher:
    [(generation, (query, mode), [(chunk_id, score)])]."""
    out = []
    for q in QUERIES:
        for m in MODES:
            r = client.post("/search", json={"query": q, "k": 5, "mode": m})
            assert r.status_code == 200, r.text
            body = r.json()
            hits = [(h["chunk_id"], round(h["score"], 4)) for h in body["hits"]]
            out.append((body["generation"], (q, m), hits))
            view = searcher.pinned()
            local = [(h.chunk_id, round(h.score, 4)) for h in view.search(q, k=5, mode=m)]
            out.append((view.generation.gen_id, (q, m), local))
    return out


def all_from(answers: list, gen: str, expected: dict) -> None:
    for got_gen, key, hits in answers:
        assert got_gen == gen, f"{key} answered from {got_gen}, not {gen}"
        assert hits == expected[key], key


@pytest.mark.parametrize("kind", list(OTHER_MODELS))
def test_readers_stay_on_a_while_b_builds_then_follow_promotion_rollback_and_drop(
    tmp_path, tiny_embedder_path, kind
):
    model_b = save_model_b(tmp_path, kind)
    db = str(tmp_path / "db")
    sa = tiny_settings(db, tiny_embedder_path, promote="manual")
    sb = tiny_settings(db, model_b, promote="manual")
    corpus = write_corpus(tmp_path / "corpus", n_docs=10, min_sentences=4)
    assert ingest([corpus], sa)["success"]
    a = live_of(db)

    # The service was started with model A and is never restarted.
    searcher = Searcher(db, embedder=Model(sa.embedder_spec()).load())
    searcher.ensure_fts_index()
    expected_a = answers_of(db, a, Model(sa.embedder_spec()))

    during: list = []
    mid_build, asked = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def hold_build(table: str) -> None:
        """At B's first commit of vectors: B half-built; let the readers ask, then go on."""
        if table.startswith("embeddings_") and not mid_build.is_set():
            mid_build.set()
            assert asked.wait(300), "the readers never asked"

    with Service(create_app(searcher)) as service:

        def reader() -> None:
            try:
                with httpx.Client(base_url=service.url, timeout=120) as client:
                    assert mid_build.wait(300)
                    during.extend(ask(client, searcher))
                    asked.set()
            except BaseException as exc:  # noqa: BLE001 (reported by the test thread)
                failures.append(exc)
                asked.set()

        readers = [threading.Thread(target=reader) for _ in range(2)]
        for t in readers:
            t.start()
        summary = ingest([corpus], sb, on_commit=hold_build)
        for t in readers:
            t.join(300)
        assert not failures, failures
        b = summary["generation"]
        assert summary["success"] and b != a and len(during) == 2 * 2 * len(QUERIES) * 2
        all_from(during, a, expected_a)  # mid-build: every answer from A, none failed

        with httpx.Client(base_url=service.url, timeout=120) as client:
            all_from(ask(client, searcher), a, expected_a)  # built, not promoted: still A
            expected_b = answers_of(db, b, Model(sb.embedder_spec()))
            assert expected_b != expected_a

            pool = ModelPool(Model(sb.embedder_spec()))
            assert promote(Store(db), b, pool).done
            all_from(ask(client, searcher), b, expected_b)  # no restart: B, with B's model
            # The OpenAI-compatible routes follow too: B's model embeds, as B's table needs.
            model_b_loaded = Model(sb.embedder_spec())
            b_id = model_b_loaded.card.model_id
            assert [m["id"] for m in client.get("/v1/models").json()["data"]] == [b_id]
            r = client.post("/v1/embeddings", json={"input": ["item 12"], "model": b_id})
            assert r.status_code == 200, r.text
            got = np.array(r.json()["data"][0]["embedding"])
            assert np.allclose(got, model_b_loaded.embed(["item 12"])[0], atol=1e-5)
            described = client.get("/store").json()["live_generation"]
            assert (
                described["id"] == b and described["card"]["dimension"] == (OTHER_MODELS[kind][0])
            )

            assert rollback(Store(db)).done
            all_from(ask(client, searcher), a, expected_a)

            assert promote(Store(db), b, pool).done
            b_tables = list(read_registry(Store(db)).get(b).tables().values())
            kept = [n for n in Store(db).table_names() if n not in ("chunks", "embeddings")]
            before = table_versions(db, kept)
            assert set(b_tables) - {f"rerank_scores_{b}"} <= set(kept)
            outcome = drop(Store(db), a)
            assert outcome.done and sorted(outcome.figures["tables_dropped"]) == [
                "chunks",
                "embeddings",
            ]
            names = Store(db).table_names()
            assert "chunks" not in names and "embeddings" not in names
            # Nothing else changed: every other table at the version it had.
            assert table_versions(db, [n for n in kept if n != "generations"]) == {
                n: v for n, v in before.items() if n != "generations"
            }
            assert [g["id"] for g in describe(Store(db))] == [b]
            all_from(ask(client, searcher), b, expected_b)
