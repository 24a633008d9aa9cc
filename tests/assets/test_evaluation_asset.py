"""retrieval_quality as a Dagster asset: ingest a tiny BEIR set, materialise the evaluation,
read the figures back from the materialisation's metadata."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

from resources import build_resources
from tests.runs import tiny_settings

DOCS = {
    "11": "Zebrafish regenerate heart muscle after cryoinjury within weeks.",
    "12": "Statins reduce cholesterol synthesis by inhibiting HMG-CoA reductase.",
    "13": "Malaria parasites invade red blood cells through the basigin receptor.",
}
QUERIES = {"1": "zebrafish cryoinjury", "2": "basigin malaria", "3": "statins reductase"}
QRELS = [("1", "11"), ("2", "13"), ("3", "12")]


def write_tiny_beir(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in DOCS.items())
    )
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items())
    )
    rows = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, d in QRELS]
    (root / "qrels" / "test.tsv").write_bytes("\r\n".join(rows).encode() + b"\r\n")
    return root


def _materialise(settings, config: dict, raise_on_error: bool = True):
    from assets.evaluation import retrieval_quality

    return dg.materialize(
        [retrieval_quality],
        resources=build_resources(settings),
        run_config={"ops": {"retrieval_quality": {"config": config}}},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
    )


def test_retrieval_quality_records_metrics_as_numeric_metadata(
    tmp_path, db_uri, tiny_embedder_path
):
    from app.runs import run_ingest

    root = write_tiny_beir(tmp_path / "beir")
    settings = tiny_settings(db_uri, tiny_embedder_path)
    ingest = run_ingest(
        [f"scifact={root / 'corpus.jsonl'}"],
        settings,
        instance=dg.DagsterInstance.ephemeral(),
        chunk_config={"chunk_tokens": 48, "chunk_overlap": 0},
    )
    assert ingest["success"] and ingest["chunks_embedded"] == 3

    result = _materialise(settings, {"eval_data": str(root), "modes": ["vector", "fts", "hybrid"]})
    (event,) = result.get_asset_materialization_events()
    meta = event.event_specific_data.materialization.metadata
    assert isinstance(meta["fts_ndcg_at_10"], dg.FloatMetadataValue)
    assert meta["fts_ndcg_at_10"].value == 1.0  # each query's rare words are in one document
    assert meta["fts_recall_at_100"].value == 1.0
    assert meta["vector_recall_at_100"].value == 1.0  # 3 documents, all retrieved
    assert 0.0 < meta["vector_ndcg_at_10"].value <= 1.0
    assert meta["hybrid_recall_at_100"].value == 1.0
    assert meta["queries"].value == 3
    assert meta["chunks_in_source"].value == 3

    # a source the store does not hold: the run fails and says how to fix it
    failed = _materialise(
        settings, {"eval_data": str(root), "source": "nope"}, raise_on_error=False
    )
    assert not failed.success
    failure = failed.get_step_failure_events()[0].event_specific_data.error
    assert failure is not None and "needs the labelled corpus" in failure.to_string()
    assert "ingest it first" in failure.to_string()


def test_evaluation_asset_is_in_definitions_but_not_in_the_ingest_job():
    from definitions import defs

    loaded = defs()
    key = dg.AssetKey("retrieval_quality")
    graph = loaded.resolve_asset_graph()
    assert key in graph.get_all_asset_keys()
    assert graph.get(key).parent_keys == {dg.AssetKey("embeddings")}
    ingest_keys = loaded.resolve_job_def("ingest").asset_layer.executable_asset_keys
    assert key not in ingest_keys
