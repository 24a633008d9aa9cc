"""The asset graph through real `dagster.materialize` runs: tiny real transformer, real LanceDB.

Covers: one model load per run over all shards (through the Definitions' own ingest job
and executor), idempotency, nothing re-embedded twice, changed and deleted documents,
other sources untouched, quarantine, model lock.
"""

import dagster as dg
import numpy as np
import pytest

from app.runs import summarise
from assets.partitions import partition_range_tags
from corpusmill.ids import ALL_PARTITIONS, partition_of
from corpusmill.model import LOADS as LOAD_COUNTS
from corpusmill.model import Model
from corpusmill.store import Store
from corpusmill.store.generations import read_registry
from tests.assets.corpora import write_corpus
from tests.runs import ingest, tiny_settings


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "corpus", n_docs=12, min_sentences=8)


@pytest.fixture
def settings(db_uri, tiny_embedder_path):
    return tiny_settings(db_uri, tiny_embedder_path)


def embedded_rows(db_uri):
    rows = (
        Store(db_uri)
        .scan("embeddings", ["chunk_id", "doc_id", "content_hash", "partition", "vector"])
        .to_pylist()
    )
    return sorted(rows, key=lambda r: r["chunk_id"])


def ingest_through_definitions(corpus, model_path, db_uri, home):
    """Launch the Definitions' ingest job over every shard, as the UI or the sensor would:
    `execute_job` runs it with the job's own executor (`execute_in_process`, which
    run_ingest uses, always runs in-process and so could not tell). The job comes from
    `build_definitions` with the tiny model's settings, rebuilt by name wherever Dagster
    executes it."""
    job = dg.build_reconstructable_job(
        "tests.assets.definitions_jobs",
        "ingest_job",
        reconstructable_kwargs={"db": db_uri, "model": str(model_path)},
    )
    run_config = {"ops": {"raw_corpus": {"config": {"sources": [str(corpus)]}}}}
    home.mkdir(parents=True, exist_ok=True)
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        result = dg.execute_job(
            job, instance=instance, run_config=run_config, tags=partition_range_tags(ALL_PARTITIONS)
        )
        return summarise(result, 0.0)


def test_all_shards_in_one_run_with_one_model_load(corpus, tiny_embedder_path, db_uri, tmp_path):
    before = LOAD_COUNTS["embedder"]
    summary = ingest_through_definitions(corpus, tiny_embedder_path, db_uri, tmp_path / "home")
    assert summary["success"]
    # 16 partitions, 3 assets (steps), one load, and in this process: with a
    # multiprocess executor each step would load the model in a child of its own.
    assert LOAD_COUNTS["embedder"] - before == 1
    assert summary["documents"] == 12
    rows = embedded_rows(db_uri)
    assert len(rows) == summary["chunks"] == summary["chunks_embedded"] > 12
    assert len({r["chunk_id"] for r in rows}) == len(rows)
    assert {r["partition"] for r in rows} == {partition_of(r["doc_id"]) for r in rows}
    assert len({r["partition"] for r in rows}) > 4  # spread over many shards
    assert summary["tokens"] > 0 and summary["tokens_per_s"] > 0


def test_a_run_with_nothing_to_embed_loads_no_weights(corpus, settings, db_uri):
    assert ingest([corpus], settings)["chunks_embedded"] > 0
    before = LOAD_COUNTS["embedder"]
    again = ingest([corpus], settings)
    assert again["success"] and again["chunks_embedded"] == 0 and again["chunks_reused"] > 0
    assert LOAD_COUNTS["embedder"] == before  # chunking used the tokenizer only
    (corpus / "doc03.txt").write_text("one new sentence about tokenizers and weights.")
    assert ingest([corpus], settings)["chunks_embedded"] > 0
    assert LOAD_COUNTS["embedder"] == before + 1


def test_rematerialising_changes_nothing_and_embeds_nothing(corpus, settings, db_uri):
    ingest([corpus], settings)
    first = embedded_rows(db_uri)
    version = Store(db_uri).version("embeddings")
    again = ingest([corpus], settings)
    assert again["chunks_embedded"] == 0
    assert again["chunks_reused"] == len(first)
    assert embedded_rows(db_uri) == first
    assert Store(db_uri).version("embeddings") == version  # not even an empty commit


def test_changed_and_deleted_documents(corpus, settings, db_uri):
    ingest([corpus], settings)
    before = {r["chunk_id"]: r for r in embedded_rows(db_uri)}
    (corpus / "doc03.txt").write_text("a completely new text for document three.")
    (corpus / "doc05.txt").unlink()
    summary = ingest([corpus], settings)
    assert summary["documents_changed"] == 1 and summary["documents_deleted"] == 1
    assert summary["chunks_embedded"] == 1  # only the new chunk of doc03
    after = {r["chunk_id"]: r for r in embedded_rows(db_uri)}
    assert not any(r["doc_id"].endswith("doc05.txt") for r in after.values())
    doc03 = [r for r in after.values() if r["doc_id"].endswith("doc03.txt")]
    assert len(doc03) == 1
    # every other chunk is byte-for-byte the row it was
    untouched = [
        c for c, r in before.items() if not r["doc_id"].endswith(("doc03.txt", "doc05.txt"))
    ]
    assert all(after[c] == before[c] for c in untouched)


def test_identical_content_is_reused_not_recomputed(corpus, settings, db_uri, tmp_path):
    ingest([corpus], settings)
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "same.txt").write_text((corpus / "doc00.txt").read_text())
    summary = ingest([copy], settings)
    assert summary["chunks_embedded"] == 0 and summary["chunks_reused"] >= 1


def test_single_partition_run_touches_only_that_partition(corpus, settings, db_uri):
    ingest([corpus], settings)
    before = embedded_rows(db_uri)
    root = corpus.resolve()
    target = partition_of(f"{root}#doc07.txt")
    elsewhere = next(
        f"doc{i:02d}.txt" for i in range(12) if partition_of(f"{root}#doc{i:02d}.txt") != target
    )
    (corpus / "doc07.txt").unlink()
    (corpus / elsewhere).write_text("changed, in a partition this run does not cover")
    ingest([corpus], settings, partitions=[target])
    after = embedded_rows(db_uri)
    assert not any(r["doc_id"].endswith("doc07.txt") for r in after)
    # rows of every other partition are exactly as they were, the pending change included
    assert [r for r in after if r["partition"] != target] == [
        r for r in before if r["partition"] != target
    ]


def test_other_sources_are_left_alone(corpus, settings, db_uri, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.md").write_text("this document belongs to another source")
    ingest([other], settings)
    ingest([corpus], settings)
    docs = {r["doc_id"] for r in embedded_rows(db_uri)}
    assert f"{other.resolve()}#keep.md" in docs
    assert sum(1 for d in docs if d.startswith(str(corpus.resolve()))) == 12


def test_bad_files_are_quarantined_and_the_run_completes(corpus, settings, db_uri):
    (corpus / "binary.txt").write_bytes(b"\x00\x01\x02")
    (corpus / "empty.md").write_text("  ")
    summary = ingest([corpus], settings)
    assert summary["success"] and summary["documents"] == 12 and summary["quarantined"] == 2
    reasons = {
        r["uri"].rsplit("/", 1)[1]: r["reason"]
        for r in Store(db_uri).scan("quarantine", ["uri", "reason"]).to_pylist()
    }
    assert set(reasons) == {"binary.txt", "empty.md"}
    # fixing the file clears its quarantine row
    (corpus / "binary.txt").write_text("now it is text")
    ingest([corpus], settings)
    assert Store(db_uri).count("quarantine") == 1


def test_a_broken_file_keeps_its_last_good_version(corpus, settings, db_uri):
    ingest([corpus], settings)
    n = len([r for r in embedded_rows(db_uri) if r["doc_id"].endswith("doc02.txt")])
    (corpus / "doc02.txt").write_bytes(b"\xff\xfe broken \x00")
    ingest([corpus], settings)
    assert len([r for r in embedded_rows(db_uri) if r["doc_id"].endswith("doc02.txt")]) == n


def test_another_model_builds_its_own_generation_and_goes_live_when_complete(
    corpus, settings, db_uri, minilm_path
):
    """Another model (MiniLM after the tiny one) is not refused: it builds its own tables
    beside the live ones and, complete and checked, goes live (CORPUSMILL_PROMOTE=auto);
    the tiny model's generation stays as the rollback target."""
    first = ingest([corpus], settings)
    other = settings.with_overrides({"model": str(minilm_path), "dtype": "auto"})
    second = ingest([corpus], other)
    assert second["success"] and second["promoted"]
    assert second["live_generation"] == second["generation"] != first["generation"]
    assert second["chunks_embedded"] == first["chunks_embedded"]
    registry = read_registry(Store(db_uri))
    assert registry.previous == first["generation"]
    assert Store(db_uri).count("embeddings") == first["rows"]  # the old tables kept


def test_embedding_uses_the_ids_the_chunker_stored_and_only_its_own(corpus, settings, db_uri):
    summary = ingest([corpus], settings)
    assert summary["pretokenized_items"] == summary["chunks_embedded"] > 12
    rows = Store(db_uri).scan("embeddings", ["text", "vector"]).to_pylist()
    fresh = Model(settings.embedder_spec()).embed([r["text"] for r in rows])  # tokenised afresh
    stored = np.array([r["vector"] for r in rows], dtype=np.float32)
    assert (stored * fresh).sum(axis=1).min() > 0.99999  # unit vectors: dot = cosine

    # Ids from any other tokenizer are not trusted: the texts are tokenised again.
    store = Store(db_uri)
    store.db.open_table("chunks").update(values={"tokenizer": "another-tokenizer"})
    store.db.drop_table("embeddings")
    again = ingest([corpus], settings)
    assert again["chunks_embedded"] == summary["chunks_embedded"]
    assert again["pretokenized_items"] == 0


def test_all_partitions_listed():
    assert len(ALL_PARTITIONS) == 16 and ALL_PARTITIONS[0] == "shard-00"
