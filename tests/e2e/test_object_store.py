"""The store on S3 (moto's server on 127.0.0.1): the same asset graph, the same guarantees.

Every connection gets the storage options (endpoint, keys, allow_http); an ingest writes
every chunk once; a rerun changes nothing; two runs on disjoint shards at the same time
leave every chunk exactly once, both creating the tables of a fresh store; the tables of a
fresh store are created once by six writers at once (the `create` lease).
"""

from __future__ import annotations

import threading
from collections import Counter

import dagster as dg

from app.runs import run_ingest
from corpusmill.ids import ALL_PARTITIONS, partition_of
from corpusmill.model.card import ModelCard
from corpusmill.store import Store
from tests.assets.corpora import write_corpus
from tests.runs import CHUNKS, tiny_settings

TABLES = ("documents", "chunks", "embeddings")


def _ingest(corpus, settings, partitions=ALL_PARTITIONS):
    # Disposed in the thread that made it: its sqlite connections belong to that thread.
    with dg.DagsterInstance.ephemeral() as instance:
        return run_ingest(
            [str(corpus)],
            settings,
            partitions=partitions,
            instance=instance,
            chunk_config=CHUNKS,
        )


def _chunk_ids(store: Store) -> Counter:
    return Counter(store.scan("embeddings", ["chunk_id"])["chunk_id"].to_pylist())


def test_ingest_into_s3_then_a_rerun_changes_nothing(s3_store, tmp_path, tiny_embedder_path):
    uri, options = s3_store
    corpus = write_corpus(tmp_path / "corpus", n_docs=8, min_sentences=6)
    settings = tiny_settings(uri, tiny_embedder_path, options)
    first = _ingest(corpus, settings)
    assert first["success"] and first["chunks_embedded"] > 8
    store = Store(uri, options)
    assert uri.startswith("s3://") and set(TABLES) <= set(store.table_names())
    ids = _chunk_ids(store)
    assert len(ids) == first["chunks"] and set(ids.values()) == {1}
    versions = {t: store.version(t) for t in TABLES}
    again = _ingest(corpus, settings)
    assert again["success"] and again["chunks_embedded"] == 0
    assert _chunk_ids(Store(uri, options)) == ids
    assert {t: Store(uri, options).version(t) for t in TABLES} == versions  # no empty commits


def test_two_disjoint_shard_runs_at_once_leave_every_chunk_once(
    s3_store, tmp_path, tiny_embedder_path
):
    uri, options = s3_store
    corpus = write_corpus(tmp_path / "corpus", n_docs=16, min_sentences=5)
    halves = (ALL_PARTITIONS[:8], ALL_PARTITIONS[8:])
    # A fresh store: both runs are first writers and create the tables at once (the
    # `create` lease serialises that, Store._create).
    results: list[dict] = []
    barrier = threading.Barrier(2)

    def worker(parts):
        barrier.wait(30)
        results.append(_ingest(corpus, tiny_settings(uri, tiny_embedder_path, options), parts))

    threads = [threading.Thread(target=worker, args=(h,)) for h in halves]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert len(results) == 2 and all(r["success"] for r in results)
    store = Store(uri, options)
    ids = _chunk_ids(store)
    assert set(ids.values()) == {1}, "a chunk is stored more than once"
    assert len(ids) == sum(r["chunks"] for r in results)
    docs = store.scan("documents", ["doc_id"])["doc_id"].to_pylist()
    assert len(docs) == len(set(docs)) == 16
    by_half = Counter(partition_of(d) in halves[0] for d in docs)
    assert by_half[True] and by_half[False]  # both runs really wrote


def test_concurrent_first_writers_all_succeed_and_leave_one_table_each(local_s3, tmp_path):
    """Six writers create the tables of a fresh s3:// store at once (three fresh stores):
    all succeed, and each table has one version, the one creation. Without the `create`
    lease Lance's second Overwrite lands on the first: versions 1 and 2 (Store._create)."""
    card = ModelCard("org/model", "abc123", 4, "mean", True, 128)
    options = local_s3.storage_options
    for trial in range(3):
        uri = local_s3.uri(f"create-{tmp_path.name}-{trial}")
        barrier, errors = threading.Barrier(6), []

        def create(i: int, uri=uri, barrier=barrier, errors=errors) -> None:
            store = Store(uri, options, owner=f"creator-{i}")
            barrier.wait(30)
            try:
                store.create_tables(card)
            except Exception as exc:  # reported below, with the trial
                errors.append(exc)

        threads = [threading.Thread(target=create, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        store = Store(uri, options)
        assert set(TABLES) | {"quarantine"} == set(store.table_names())
        versions = {t: [v["version"] for v in store.open(t).list_versions()] for t in TABLES}
        assert versions == {t: [1] for t in TABLES}, f"trial {trial}"
        store.ensure_embeddings(card)  # the card it carries is the one asked for
        assert store.leases is not None and not store.leases.client.list_objects_v2(
            Bucket=store.leases.bucket, Prefix=store.leases.key("create")
        ).get("KeyCount")


def test_a_new_model_builds_beside_switches_and_rolls_back_on_s3(
    s3_store, tmp_path, tiny_embedder_path
):
    """The model lifecycle on S3: B's tables written beside A's through the same store
    (leases of its own), promotion and rollback one commit each, A's tables untouched."""
    from corpusmill.lifecycle.operations import promote, rollback
    from corpusmill.model import Model
    from corpusmill.model.pool import ModelPool
    from corpusmill.search import Searcher
    from corpusmill.store.generations import read_registry
    from tests.generations import save_model_b

    uri, options = s3_store
    corpus = write_corpus(tmp_path / "corpus", n_docs=6, min_sentences=5)
    sa = tiny_settings(uri, tiny_embedder_path, options, promote="manual")
    sb = tiny_settings(uri, save_model_b(tmp_path, "other-dimension"), options, promote="manual")
    assert _ingest(corpus, sa)["success"]
    a = read_registry(Store(uri, options)).live
    versions = {t: Store(uri, options).version(t) for t in TABLES}
    built = _ingest(corpus, sb)
    b = built["generation"]
    assert built["success"] and b != a
    assert {t: Store(uri, options).version(t) for t in TABLES} == versions
    view = read_registry(Store(uri, options)).get(b).view(Store(uri, options))
    assert Counter(view.scan("embeddings", ["chunk_id"])["chunk_id"].to_pylist()) == _chunk_ids(
        Store(uri, options)
    )

    searcher = Searcher(uri, embedder=Model(sb.embedder_spec()), storage_options=options)
    assert searcher.pinned().generation.gen_id == a
    assert promote(Store(uri, options), b, ModelPool(Model(sb.embedder_spec()))).done
    pinned = searcher.pinned()
    assert pinned.generation.gen_id == b and pinned.search("topic2", k=2)
    assert rollback(Store(uri, options)).done and searcher.pinned().generation.gen_id == a
