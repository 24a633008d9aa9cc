"""store_upkeep through `dagster.materialize`: compaction, version cleanup, the full-text,
filter and ANN indexes, and search still right afterwards."""

import threading

import dagster as dg
import pytest

from app.runs import run_ingest
from assets.maintenance import store_upkeep
from corpusmill.config import Settings
from corpusmill.model import Model
from corpusmill.search import Searcher
from corpusmill.store import Store
from corpusmill.store.upkeep import ann_partitions, index_columns
from resources import build_resources
from tests.runs import tiny_settings
from tests.waiting import lock_waiters, wait_for


@pytest.fixture
def ingested(tmp_path, db_uri, tiny_embedder_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    settings = tiny_settings(db_uri, tiny_embedder_path)
    # Two ingests (the second changes a document) leave many small commits behind.
    for round_ in range(2):
        for i in range(8):
            (corpus / f"doc{i}.txt").write_text(
                f"document {i} round {round_ if i == 0 else 0} " + f"word{i} " * 40
            )
        summary = run_ingest(
            [str(corpus)],
            settings,
            instance=dg.DagsterInstance.ephemeral(),
            chunk_config={"chunk_tokens": 16, "chunk_overlap": 2},
        )
        assert summary["success"]
    return settings


def upkeep_run(settings, **config):
    result = dg.materialize(
        [store_upkeep],
        resources={"store": build_resources(settings)["store"]},
        run_config={"ops": {"store_upkeep": {"config": config}}},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    event = result.get_asset_materialization_events()[0]
    return {k: v.value for k, v in event.event_specific_data.materialization.metadata.items()}


@pytest.mark.slow
def test_upkeep_compacts_cleans_and_indexes(ingested, db_uri):
    store = Store(db_uri)
    searcher = Searcher(db_uri, embedder=Model(ingested.embedder_spec()))
    before_hits = [h.chunk_id for h in searcher.search("word3 document", k=5)]
    rows = store.count("embeddings")

    # Below the threshold: no vector index; the grace period keeps recent versions.
    first = upkeep_run(ingested, cleanup_older_than_minutes=60)
    assert "ivf" not in first["embeddings.indexes_built"]
    # The full-text index: built by the ingest (the writer), so upkeep finds it there.
    assert "fts(text)" not in first["embeddings.indexes_built"]
    assert index_columns(store.open("embeddings"))["text"] == "FTS"
    assert "vector" not in index_columns(store.open("embeddings"))
    assert first["embeddings.versions_after"] > 1

    meta = upkeep_run(ingested, cleanup_older_than_minutes=0, ann_min_rows=10)

    assert first["embeddings.fragments_before"] > first["embeddings.fragments_after"] == 1
    assert meta["embeddings.versions_before"] > meta["embeddings.versions_after"]
    assert first["chunks.fragments_after"] == 1
    assert f"partitions={ann_partitions(rows)}" in meta["embeddings.indexes_built"]
    kinds = index_columns(store.open("embeddings"))
    assert kinds["text"] == "FTS" and kinds["vector"] == "IvfSq"
    assert kinds["doc_id"] == "BTree" and kinds["partition"] == "Bitmap"
    assert store.count("embeddings") == rows

    # Search is unchanged in content (the tiny table is well within the probed lists),
    # and filters still work through the scalar indexes.
    assert [h.chunk_id for h in searcher.search("word3 document", k=5)] == before_hits
    hits = searcher.search(
        "word5",
        k=3,
        mode="hybrid",
        source=str(store.scan("embeddings", ["source"]).to_pylist()[0]["source"]),
    )
    assert hits and hits[0].text.count("word5") > 0

    # A second pass has nothing to build and leaves the row count alone.
    again = upkeep_run(ingested, cleanup_older_than_minutes=0, ann_min_rows=10)
    assert again["embeddings.indexes_built"] == "none"
    assert store.count("embeddings") == rows


def test_upkeep_waits_for_a_writer_holding_the_lock(db_uri):
    from corpusmill.store import documents_schema

    store = Store(db_uri)
    store.ensure("documents", documents_schema())
    holding, let_go = threading.Event(), threading.Event()
    finished, metas = [], []

    def writer():
        with store.write_lock():
            holding.set()
            assert let_go.wait(120)
            finished.append("writer")

    def upkeep():
        metas.append(upkeep_run(Settings(db=db_uri), cleanup_older_than_minutes=60))
        finished.append("upkeep")

    threads = [threading.Thread(target=writer), threading.Thread(target=upkeep)]
    threads[0].start()
    assert holding.wait(30)
    threads[1].start()
    # The kernel lists the upkeep's thread as blocked on the store lock (or it ended).
    wait_for(lambda: lock_waiters(db_uri) or not threads[1].is_alive(), 120, "upkeep to wait")
    assert finished == [], "upkeep ran while a writer held the lock"
    let_go.set()
    for t in threads:
        t.join(120)
    assert finished == ["writer", "upkeep"]
    assert metas[0]["documents.rows"] == 0
