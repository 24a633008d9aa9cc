"""The blocking embeddings checks judge the run's own shards: a run on some shards passes
while another run is half-way through other shards of the same table (its chunks committed,
its vectors not yet), and a run on the half-written shard still fails. Real Dagster runs on
a tiny real transformer and a real LanceDB directory."""

import dagster as dg

from app.runs import run_ingest
from assets.checks import EMBEDDINGS_CHECKS
from assets.embeddings import embeddings
from assets.partitions import partition_range_tags
from corpusmill.ids import ALL_PARTITIONS
from corpusmill.store import Store, eq_filter
from resources import build_resources
from tests.assets.corpora import write_corpus
from tests.runs import CHUNKS, tiny_settings


def test_a_run_passes_its_checks_while_another_shard_is_half_written(
    tmp_path, db_uri, tiny_embedder_path
):
    settings = tiny_settings(db_uri, tiny_embedder_path)
    corpus = write_corpus(tmp_path / "corpus", n_docs=8, min_sentences=3)
    instance = dg.DagsterInstance.ephemeral()
    assert run_ingest([str(corpus)], settings, instance=instance, chunk_config=CHUNKS)["success"]
    store = Store(db_uri)
    shards = sorted(set(store.scan("chunks", ["partition"])["partition"].to_pylist()))
    assert len(shards) >= 2
    half = shards[-1]  # another run's shard: chunks there, its vectors not committed yet
    store.open("embeddings").delete(eq_filter("partition", half))
    # A run is a contiguous range of shards: this one ends before the half-written one.
    others = ALL_PARTITIONS[: ALL_PARTITIONS.index(half)]

    mine = run_ingest(
        [str(corpus)],
        settings,
        partitions=others,
        instance=instance,
        chunk_config=CHUNKS,
    )
    assert mine["success"] and mine["chunks_embedded"] == 0
    assert mine["checks"]["one_embedding_per_chunk"] is True

    # The same state seen by a run on the half-written shard, checks only (no writes; the
    # shard comes in the run's tags, as a run launched on that shard carries it).
    job = dg.define_asset_job(
        "checks_only", selection=dg.AssetSelection.checks_for_assets(embeddings)
    )
    defs = dg.Definitions(
        assets=[embeddings],
        asset_checks=EMBEDDINGS_CHECKS,
        jobs=[job],
        resources=build_resources(settings),
    )
    result = defs.resolve_job_def("checks_only").execute_in_process(
        instance=instance, tags=partition_range_tags([half]), raise_on_error=False
    )
    passed = {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    }
    assert passed["one_embedding_per_chunk"] is False
    assert passed["vectors_valid"] is True and passed["model_card_matches"] is True
