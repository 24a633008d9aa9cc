"""The store on S3 (moto's server on 127.0.0.1): the same asset graph, the same guarantees.

Every connection gets the storage options (endpoint, keys, allow_http); an ingest writes
every chunk once; a rerun changes nothing; two runs on disjoint shards at the same time
leave every chunk exactly once (there is no lock on an object store: Lance's conditional-put
commits and the declared keys are what keep them apart), once one writer created the tables.
"""

from __future__ import annotations

import threading
from collections import Counter

import dagster as dg

from app.runs import run_ingest
from corpusmill.ids import ALL_PARTITIONS, partition_of
from corpusmill.model import Model, ModelSpec
from corpusmill.store import Store
from resources import (
    CrossEncoderResource,
    EmbedderResource,
    LanceStoreResource,
    PipelineSettingsResource,
)
from tests.assets.corpora import write_corpus

CHUNKS = {"chunk_tokens": 24, "chunk_overlap": 4}
TABLES = ("documents", "chunks", "embeddings")


def _resources(uri, options, model_path):
    return {
        "store": LanceStoreResource(uri=uri, storage_options=options),
        "settings": PipelineSettingsResource(),
        "embedder": EmbedderResource(model_path=str(model_path), dtype="float32"),
        "reranker": CrossEncoderResource(),
    }


def _ingest(corpus, resources, partitions=ALL_PARTITIONS):
    # Disposed in the thread that made it: its sqlite connections belong to that thread.
    with dg.DagsterInstance.ephemeral() as instance:
        return run_ingest(
            [str(corpus)],
            resources=resources,
            partitions=partitions,
            instance=instance,
            chunk_config=CHUNKS,
        )


def _chunk_ids(store: Store) -> Counter:
    return Counter(store.scan("embeddings", ["chunk_id"])["chunk_id"].to_pylist())


def test_ingest_into_s3_then_a_rerun_changes_nothing(s3_store, tmp_path, tiny_embedder_path):
    uri, options = s3_store
    corpus = write_corpus(tmp_path / "corpus", n_docs=8, min_sentences=6)
    resources = _resources(uri, options, tiny_embedder_path)
    first = _ingest(corpus, resources)
    assert first["success"] and first["chunks_embedded"] > 8
    store = Store(uri, options)
    assert uri.startswith("s3://") and set(TABLES) <= set(store.table_names())
    ids = _chunk_ids(store)
    assert len(ids) == first["chunks"] and set(ids.values()) == {1}
    versions = {t: store.version(t) for t in TABLES}
    again = _ingest(corpus, resources)
    assert again["success"] and again["chunks_embedded"] == 0
    assert _chunk_ids(Store(uri, options)) == ids
    assert {t: Store(uri, options).version(t) for t in TABLES} == versions  # no empty commits


def test_two_disjoint_shard_runs_at_once_leave_every_chunk_once(
    s3_store, tmp_path, tiny_embedder_path
):
    uri, options = s3_store
    corpus = write_corpus(tmp_path / "corpus", n_docs=16, min_sentences=5)
    halves = (ALL_PARTITIONS[:8], ALL_PARTITIONS[8:])
    # Tables are created by one writer first: concurrent creation on S3 can leave one
    # creator's empty table over the other's (Store._create says why).
    card = Model(ModelSpec(path=str(tiny_embedder_path), dtype="float32")).card
    Store(uri, options).create_tables(card)
    results: list[dict] = []
    barrier = threading.Barrier(2)

    def worker(parts):
        barrier.wait(30)
        results.append(_ingest(corpus, _resources(uri, options, tiny_embedder_path), parts))

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
