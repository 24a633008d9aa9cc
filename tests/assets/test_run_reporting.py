"""What a run tells an operator: progress lines in the run log, each shard's own counts as
observations of that partition, run-level figures labelled `run_`, the `ingest` job name.
Real Dagster runs on a tiny real transformer and a real LanceDB directory."""

from collections import Counter

import dagster as dg
import pytest

from app.runs import run_ingest
from corpusmill.store import Store
from tests.assets.corpora import write_corpus
from tests.events import per_shard
from tests.runs import CHUNKS, tiny_settings


@pytest.fixture
def settings(db_uri, tiny_embedder_path):
    return tiny_settings(db_uri, tiny_embedder_path, max_batch_tokens=256)


def _latest_metadata(instance, asset, partition):
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]),
        limit=1,
        ascending=False,
    ).records
    return records[0].asset_materialization.metadata


def test_progress_lines_shard_observations_and_run_level_metadata(tmp_path, settings, db_uri):
    corpus = write_corpus(tmp_path / "corpus", n_docs=12, min_sentences=8)
    instance = dg.DagsterInstance.ephemeral()
    heard = []
    summary = run_ingest(
        [str(corpus)],
        settings,
        instance=instance,
        chunk_config=CHUNKS,
        progress=heard.append,
        progress_every_s=0.0,  # a report per batch, so a tiny corpus still shows several
    )
    assert summary["success"]
    run = instance.get_run_by_id(summary["run_id"])
    assert run.job_name == "ingest"

    # Progress: lines in the run log at the rhythm, and the same numbers to the CLI callback.
    lines = [
        r.user_message
        for r in instance.all_logs(summary["run_id"])
        if r.user_message.startswith("embedded ")
    ]
    assert len(lines) >= 3
    assert f"/{summary['chunks_embedded']} chunks" in lines[0] and "tokens/s" in lines[0]
    assert "left" in lines[0] and "done in" in lines[-1]
    assert heard[-1].final and heard[-1].done == heard[-1].total == summary["chunks_embedded"]

    # Per shard: each shard's own rows, summing to the table; not the run total 16 times.
    rows = Counter(Store(db_uri).scan("embeddings", ["partition"]).column("partition").to_pylist())
    shards = per_shard(instance, summary["run_id"], "embeddings")
    assert len(shards) == 16
    assert {p: m["rows"] for p, m in shards.items() if m["rows"]} == dict(rows)
    assert sum(m["chunks_embedded"] for m in shards.values()) == summary["chunks_embedded"]
    assert len({m["rows"] for m in shards.values()}) > 1
    docs = per_shard(instance, summary["run_id"], "raw_corpus")
    assert sum(m["documents"] for m in docs.values()) == 12
    chunks = per_shard(instance, summary["run_id"], "chunked_documents")
    assert sum(m["rows"] for m in chunks.values()) == summary["chunks"]

    # The materialisation's figures are run-level and say so; numeric ones are numeric.
    meta = _latest_metadata(instance, "embeddings", "shard-07")
    assert "rows" not in meta and meta["run_rows"].value == sum(rows.values())
    assert meta["run_partitions"].value == 16
    assert isinstance(meta["run_tokens_per_s"], dg.FloatMetadataValue)
    assert meta["run_tokens_per_s"].value > 0

    # A run that embeds nothing records no throughput (a 0 would plot as a crash).
    again = run_ingest(
        [str(corpus)],
        settings,
        instance=instance,
        chunk_config=CHUNKS,
    )
    assert again["chunks_embedded"] == 0
    meta = _latest_metadata(instance, "embeddings", "shard-07")
    assert "run_tokens_per_s" not in meta and "run_gpu" not in meta
    assert meta["run_chunks_reused"].value == summary["chunks_embedded"]


def test_embeddings_checks_pass_on_a_run_and_a_failing_one_blocks_rerank_scores(
    tmp_path, settings, db_uri
):
    corpus = write_corpus(tmp_path / "corpus", n_docs=4, min_sentences=3)
    instance = dg.DagsterInstance.ephemeral()
    summary = run_ingest([str(corpus)], settings, instance=instance, chunk_config=CHUNKS)
    assert summary["success"]
    assert summary["checks"] == {
        "vectors_valid": True,
        "one_embedding_per_chunk": True,
        "model_card_matches": True,
    }
    # A duplicate row (what a non-atomic writer could leave behind): the coverage check
    # fails, and being blocking it stops rerank_scores in the same run.
    table = Store(db_uri).open("embeddings")
    table.add(table.search().limit(1).to_arrow())
    broken = run_ingest(
        [str(corpus)], settings, instance=instance, chunk_config=CHUNKS, with_rerank=True
    )
    assert not broken["success"]
    assert broken["checks"]["one_embedding_per_chunk"] is False
    assert broken["checks"]["vectors_valid"] is True
    assert broken["rerank_rows"] == 0 and Store(db_uri).open("rerank_scores") is None
