"""Model generations through real ingest runs (tiny models, a real LanceDB directory): a new
model builds beside the live one shard by shard, Dagster sees each shard of it, a stopped
build resumes, a store from before generations is taken over in place, and a file that
arrives during a build reaches both generations (the service and the SIGKILLs:
tests/e2e/test_generations_serve.py)."""

from __future__ import annotations

import argparse
import shutil
import threading

import dagster as dg
import pytest

import corpusmill.sync.chunks
import corpusmill.sync.embeddings
from app.generations import cmd_list
from app.runs import run_ingest
from assets.partitions import TRIGGER_TAG
from corpusmill.errors import ModelMismatchError
from corpusmill.ids import partition_of
from corpusmill.lifecycle.operations import describe, promote
from corpusmill.model import Model
from corpusmill.model.pool import ModelPool
from corpusmill.search import Searcher
from corpusmill.store import Store
from corpusmill.store.generations import TABLE, read_registry
from tests.assets.corpora import write_corpus
from tests.events import per_shard
from tests.generations import live_of, rows_of, save_model_b, table_versions
from tests.runs import ingest, tiny_settings


class Stop(Exception):
    """The simulated crash."""


@pytest.fixture(scope="module")
def model_b(tmp_path_factory):
    return save_model_b(tmp_path_factory.mktemp("models"), "other-dimension")


@pytest.fixture
def two_settings(tmp_path, db_uri, tiny_embedder_path, model_b):
    manual = {"promote": "manual"}
    return tiny_settings(db_uri, tiny_embedder_path, **manual), tiny_settings(
        db_uri, model_b, **manual
    )


def test_the_new_generation_is_built_beside_shard_by_shard_and_the_old_one_is_untouched(
    tmp_path, db_uri, two_settings
):
    sa, sb = two_settings
    corpus = write_corpus(tmp_path / "corpus", n_docs=8, min_sentences=4)
    assert ingest([corpus], sa)["success"]
    a = live_of(db_uri)
    plain = ("documents", "chunks", "embeddings", "quarantine")
    before = table_versions(db_uri, plain)
    a_rows = rows_of(db_uri, a)

    instance = dg.DagsterInstance.ephemeral()
    summary = ingest([corpus], sb, instance=instance)
    assert summary["success"] and summary["live_generation"] == a
    b = summary["generation"]
    assert b != a and summary["chunks_embedded"] == len(a_rows)  # every chunk, once
    # Beside, never in place: A's tables and the documents are not written at all.
    assert table_versions(db_uri, plain) == before
    assert rows_of(db_uri, b) == rows_of(db_uri, b, "chunks")
    # B's model has A's tokenizer: its chunks are A's, copied, not tokenised again, and
    # their stored token ids feed B's engine.
    chunked = per_shard(instance, summary["run_id"], "chunked_documents", "materialization")
    assert {m["run_documents_copied"] for m in chunked.values()} == {8}
    assert rows_of(db_uri, b, "chunks") == rows_of(db_uri, a, "chunks")
    assert summary["pretokenized_items"] == summary["chunks_embedded"]
    gens = {g["id"]: g for g in describe(Store(db_uri))}
    assert gens[a]["state"] == "live" and gens[b]["state"] == "ready"
    assert gens[b]["shards_complete"] == 16 and gens[b]["checks"]["passed"]
    assert gens[b]["dimension"] == 48 and gens[b]["tables"]["embeddings"] == f"embeddings_{b}"

    # Each shard of the new generation is a partition with its own counts, B's.
    shards = per_shard(instance, summary["run_id"], "embeddings")
    view = read_registry(Store(db_uri)).get(b).view(Store(db_uri))
    for shard, counts in shards.items():
        assert counts["rows"] == view.count("embeddings", f"partition = '{shard}'")
    assert sum(c["rows"] for c in shards.values()) == len(a_rows)
    mats = per_shard(instance, summary["run_id"], "embeddings", "materialization")
    assert {m["generation"] for m in mats.values()} == {b}
    record = instance.get_latest_materialization_event(dg.AssetKey("embeddings"))
    mat = record.dagster_event.event_specific_data.materialization
    assert f"generation={b}" in mat.tags["dagster/code_version"]


def test_a_build_stopped_after_any_commit_resumes_where_it_stopped(
    tmp_path, db_uri, two_settings, monkeypatch
):
    """Stopped after its first commit (chunks), its first vectors, its last but one: the rerun
    finishes it without embedding again what was committed, and A stays live."""
    for module in (corpusmill.sync.chunks, corpusmill.sync.embeddings):
        monkeypatch.setattr(module, "DOC_GROUP", 2)
    monkeypatch.setattr(corpusmill.sync.embeddings, "COMMIT_DOCS", 2)  # a commit per group
    sa, sb = two_settings
    corpus = write_corpus(tmp_path / "corpus", n_docs=8, min_sentences=4)
    assert ingest([corpus], sa)["success"]
    a = live_of(db_uri)
    base = str(tmp_path / "base")
    shutil.copytree(db_uri, base)
    commits: list[str] = []
    clean_summary = ingest([corpus], sb, on_commit=commits.append)
    b = clean_summary["generation"]
    built = [t for t in commits if t.endswith(b)]
    first_vectors = built.index(f"embeddings_{b}") + 1
    assert 2 <= first_vectors < len(built) - 1

    for stop_at in (1, first_vectors, len(built) - 1):
        db = str(tmp_path / f"trial{stop_at}")
        shutil.copytree(base, db)
        seen: list[str] = []

        def stop(table: str, stop_at=stop_at, seen=seen) -> None:
            if table.endswith(b):
                seen.append(table)
                if len(seen) == stop_at:
                    raise Stop(f"stopped after {table}")

        with pytest.raises(Stop):
            ingest([corpus], sb.with_overrides({"db": db}), on_commit=stop)
        assert live_of(db) == a
        done = rows_of(db, b)
        assert done != rows_of(db_uri, b)  # the stop left it half-built
        again = ingest([corpus], sb.with_overrides({"db": db}))
        assert again["success"] and live_of(db) == a
        # Resumed where it stopped: what was committed is not embedded again.
        assert again["chunks_embedded"] == clean_summary["chunks_embedded"] - len(done)
        assert rows_of(db, b) == rows_of(db_uri, b)
        assert rows_of(db, b, "chunks") == rows_of(db_uri, b, "chunks")
        assert rows_of(db, a) == rows_of(db_uri, a)


def test_a_store_from_before_generations_is_taken_over_in_place(tmp_path, db_uri, two_settings):
    sa, sb = two_settings
    corpus = write_corpus(tmp_path / "corpus", n_docs=6, min_sentences=4)
    assert ingest([corpus], sa)["success"]
    store = Store(db_uri)
    store.db.drop_table(TABLE)  # as a store written before generations existed
    embeddings_version = store.version("embeddings")

    # A reader sees the plain tables as the live generation, and writes nothing.
    hits = Searcher(db_uri, embedder=Model(sa.embedder_spec())).search("topic3", k=3)
    assert hits and TABLE not in Store(db_uri).table_names()

    # The first use is a run with another model: the old generation is registered in place,
    # but its model's folder is not recorded anywhere, and keeping it current needs it.
    with pytest.raises(ModelMismatchError, match="CORPUSMILL_MODEL to its folder once"):
        ingest([corpus], sb)
    assert Store(db_uri).version("embeddings") == embeddings_version
    # `corpusmill generations list` with the old model configured records its folder.
    assert cmd_list(argparse.Namespace(json=True), sa) == 0
    summary = ingest([corpus], sb)
    assert summary["success"]
    registry = read_registry(Store(db_uri))
    a = registry.live
    assert registry.get(a).suffix == ""
    assert registry.get(a).model_id == Model(sa.embedder_spec()).card.model_id
    assert Store(db_uri).version("embeddings") == embeddings_version  # nothing re-embedded
    assert summary["generation"] in registry.generations and summary["generation"] != a


def inbox_in_a(tmp_path, settings, n_files: int):
    """An inbox of `n_files` files, ingested with model A (`settings`)."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(n_files):
        (inbox / f"f{i}.txt").write_text(f"file {i} about harbours and rivers " * 6)
    source = [f"inbox={inbox}"]
    assert run_ingest(source, settings, instance=dg.DagsterInstance.ephemeral())["success"]
    return inbox


def sensor_run(source: list[str], settings, doc: str) -> dict:
    """The run the inbox sensor asks for `doc`: its shard, tagged as the sensor's."""
    return run_ingest(
        source,
        settings,
        partitions=[partition_of(doc)],
        instance=dg.DagsterInstance.ephemeral(),
        tags={TRIGGER_TAG: "inbox_sensor"},
    )


def test_a_file_arriving_during_a_build_reaches_the_live_generation_at_once_and_both_before_the_switch(
    tmp_path, db_uri, two_settings
):
    sa, sb = two_settings
    inbox = inbox_in_a(tmp_path, sa, 6)
    source = [f"inbox={inbox}"]
    a = live_of(db_uri)
    # The live table's full-text index exists before the build: the ingest built it.

    paused, resume = threading.Event(), threading.Event()

    def hold_build(table: str) -> None:
        if table.startswith("embeddings_") and not paused.is_set():
            paused.set()
            assert resume.wait(300), "the test never resumed the build"

    build: dict = {}
    builder = threading.Thread(
        target=lambda: build.update(
            run_ingest(source, sb, instance=dg.DagsterInstance.ephemeral(), on_commit=hold_build)
        )
    )
    builder.start()
    try:
        assert paused.wait(300), "the build never committed"
        late = inbox / "late.txt"
        late.write_text("a zeppelin arrives late " * 8)
        doc = "inbox#late.txt"
        # The inbox sensor's run for it, while the build holds the new generation's shards.
        assert sensor_run(source, sb, doc)["success"]
        live_hits = Searcher(db_uri, embedder=Model(sb.embedder_spec())).search(
            "zeppelin", k=3, mode="fts"
        )
        assert [h.doc_id for h in live_hits][:1] == [doc]  # in the live generation at once
    finally:
        resume.set()
        builder.join(300)
    b = build["generation"]
    assert build["success"] and live_of(db_uri) == a

    pool = ModelPool(Model(sb.embedder_spec()))
    refused = promote(Store(db_uri), b, pool)
    assert not refused.done and "1 documents not chunked" in refused.reason  # nothing dropped
    # The next inbox run, the build having let go: the new generation catches up.
    assert sensor_run(source, sb, doc)["success"]
    assert promote(Store(db_uri), b, pool).done and live_of(db_uri) == b
    for gen in (b, a):
        searcher = Searcher(db_uri, embedder=Model(sb.embedder_spec()), generation=gen)
        assert [h.doc_id for h in searcher.search("zeppelin", k=3, mode="fts")][:1] == [doc]
        assert searcher.search("zeppelin", k=1, doc_id=doc), f"no vector of it in {gen}"


def test_the_sensor_asks_for_what_the_new_generation_lacks_unless_a_build_holds_it(
    tmp_path, db_uri, two_settings
):
    from resources import build_resources
    from sensors.inbox import build_inbox_sensor

    sa, sb = two_settings
    inbox = inbox_in_a(tmp_path, sa, 4)
    settings = sb.with_overrides({"inbox": str(inbox)})  # the deployment now configures B
    sensor = build_inbox_sensor(settings, name="inbox_sensor")
    store_resource = build_resources(settings)["store"]

    def tick():
        context = dg.build_sensor_context(
            instance=dg.DagsterInstance.ephemeral(),
            sensor_name="inbox_sensor",
            resources={"store": store_resource},
        )
        result = sensor(context)
        return result.run_requests or []

    # A holds every file; B has none of them yet: a run over their shards is asked for.
    [request] = tick()
    shards = {partition_of(f"inbox#f{i}.txt") for i in range(4)}
    assert set(request.tags["corpusmill/partitions"].split(",")) == shards
    # While a build holds B's shards (another writer: here a thread), B is left to it.
    gen = read_registry(Store(db_uri)).planned(Model(sb.embedder_spec()).card)
    holding, release = threading.Event(), threading.Event()

    def build_holds_b() -> None:
        with gen.view(Store(db_uri)).write_lock(sorted(shards)):
            holding.set()
            release.wait(120)

    holder = threading.Thread(target=build_holds_b)
    holder.start()
    try:
        assert holding.wait(120)
        assert tick() == []
    finally:
        release.set()
        holder.join(120)
    assert len(tick()) == 1  # let go: asked for again


def test_rerank_scores_are_kept_per_generation(tmp_path, db_uri, two_settings):
    """`ingest --rerank` with B configured: B's candidates and scores come from B's vectors
    and model, into B's table; A's scores stay A's (kept current with A's model)."""
    sa, sb = two_settings
    corpus = write_corpus(tmp_path / "corpus", n_docs=6, min_sentences=4)
    first = ingest([corpus], sa, with_rerank=True)
    a = first["generation"]
    a_scores = Store(db_uri).scan("rerank_scores", ["score_id", "reranker_id", "score"])
    second = ingest([corpus], sb, with_rerank=True)
    b = second["generation"]
    assert second["success"] and second["rerank_rows"] > 0
    store = Store(db_uri)
    b_scores = (
        read_registry(store)
        .get(b)
        .view(store)
        .scan("rerank_scores", ["score_id", "reranker_id", "score"])
    )
    assert set(b_scores["reranker_id"].to_pylist()) == {Model(sb.embedder_spec()).card.model_id}
    assert b_scores.num_rows == second["rerank_rows"]
    assert store.scan("rerank_scores", ["score_id", "reranker_id", "score"]).equals(a_scores)
    assert read_registry(store).live == a
