"""definitions.py against a written-out snapshot of the graph the README promises.

Any change to definitions.py (an asset, a dependency, the partitions, a check, a job's
selection, a sensor, a schedule, the executor) changes `snapshot(defs)` and fails
`test_definitions_match_the_snapshot`: update EXPECTED in the same commit, on purpose.
"""

from pathlib import Path

import dagster as dg
import pytest

SHARDS = [f"shard-{i:02d}" for i in range(16)]
INGEST = ["chunked_documents", "embeddings", "live_generation", "raw_corpus"]
BUILD = ["chunked_documents", "embeddings", "live_generation"]

EXPECTED = {
    "assets": {
        "raw_corpus": {"deps": [], "partitions": SHARDS, "backfill": "single_run"},
        "chunked_documents": {
            "deps": ["raw_corpus"],
            "partitions": SHARDS,
            "backfill": "single_run",
        },
        "embeddings": {
            "deps": ["chunked_documents"],
            "partitions": SHARDS,
            "backfill": "single_run",
        },
        "rerank_scores": {"deps": ["embeddings"], "partitions": SHARDS, "backfill": "single_run"},
        "live_generation": {"deps": ["embeddings"], "partitions": None, "backfill": None},
        "retrieval_quality": {"deps": ["embeddings"], "partitions": None, "backfill": None},
        "store_upkeep": {
            "deps": ["embeddings", "rerank_scores"],
            "partitions": None,
            "backfill": None,
        },
    },
    # None today: adding a check changes this line on purpose.
    "asset_checks": [
        "embeddings:model_card_matches",
        "embeddings:one_embedding_per_chunk",
        "embeddings:vectors_valid",
    ],
    "jobs": {"ingest": INGEST, "build_generation": BUILD, "upkeep": ["store_upkeep"]},
    "schedules": {
        "upkeep_schedule": {"job": "upkeep", "cron": "0 3 * * *", "default_status": "RUNNING"}
    },
    "sensors": {
        "inbox_sensor": {"jobs": ["ingest"], "default_status": "RUNNING", "interval_s": 15}
    },
    # In-process: one model load per run, shared by every step (see the pipeline tests).
    "executor": "in_process",
    "job_executors": {
        "ingest": "in_process",
        "build_generation": "in_process",
        "upkeep": "in_process",
    },
    "resources": ["embedder", "models", "reranker", "settings", "store"],
}


def _backfill(policy) -> str | None:
    if policy is None:
        return None
    return "single_run" if policy == dg.BackfillPolicy.single_run() else repr(policy)


def snapshot(defs: dg.Definitions) -> dict:
    """The graph as plain data, read from the Definitions object itself (not from the
    modules it was built from), so an asset or schedule left out of it shows here."""
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "deps": sorted(p.to_user_string() for p in node.parent_keys),
            "partitions": node.partitions_def.get_partition_keys() if node.partitions_def else None,
            "backfill": _backfill(node.backfill_policy),
        }
    # Dagster adds an implicit "__ASSET_JOB" over every asset; only the declared jobs count.
    jobs = {j.name: j for j in defs.resolve_all_job_defs() if not j.name.startswith("__")}
    return {
        "assets": assets,
        "asset_checks": sorted(k.to_user_string() for k in graph.asset_check_keys),
        "jobs": {
            name: sorted(k.to_user_string() for k in job.asset_layer.selected_asset_keys)
            for name, job in jobs.items()
        },
        "schedules": {
            s.name: {
                "job": s.job_name,
                "cron": s.cron_schedule,
                "default_status": s.default_status.value,
            }
            for s in defs.schedules or []
        },
        "sensors": {
            s.name: {
                "jobs": sorted(t.job_name for t in s.targets),
                "default_status": s.default_status.value,
                "interval_s": s.minimum_interval_seconds,
            }
            for s in defs.sensors or []
        },
        "executor": defs.executor.name if defs.executor else None,
        "job_executors": {name: job.executor_def.name for name, job in jobs.items()},
        "resources": sorted(defs.resources or {}),
    }


def test_definitions_match_the_snapshot():
    from definitions import defs

    assert snapshot(defs()) == EXPECTED


def test_schedule_and_sensor_resolve_to_runnable_jobs():
    """The schedule and the sensor are in the Definitions, and their jobs resolve there."""
    from definitions import defs

    loaded = defs()
    schedule = loaded.resolve_schedule_def("upkeep_schedule")
    assert loaded.resolve_job_def(schedule.job_name).name == "upkeep"
    sensor = loaded.resolve_sensor_def("inbox_sensor")
    assert [loaded.resolve_job_def(t.job_name).name for t in sensor.targets] == ["ingest"]


def test_loading_definitions_does_not_import_torch():
    """The UI reloads definitions often: heavy imports must stay lazy."""
    import subprocess
    import sys

    code = (
        "import sys, definitions; definitions.defs(); "
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[1]  # definitions.py loads from the checkout
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False"]


def test_defs_reads_the_environment_when_dagster_asks_not_at_import(monkeypatch):
    """`definitions.defs` is lazy (`@dg.definitions`): importing the module reads no
    setting, so an invalid one fails the load that uses it, with its name."""
    import importlib

    import definitions
    from corpusmill.errors import ConfigError

    monkeypatch.setenv("CORPUSMILL_CHUNK_TOKENS", "x")
    importlib.reload(definitions)
    with pytest.raises(ConfigError, match="CORPUSMILL_CHUNK_TOKENS"):
        definitions.defs()


def test_the_cli_runs_the_graph_the_ui_loads():
    """`corpusmill ingest` (app/runs.py) builds with `build_definitions` too: the same
    graph, its `ingest` job widened by rerank_scores only when asked (`--rerank`)."""
    from corpusmill.config import Settings
    from definitions import build_definitions

    assert snapshot(build_definitions(Settings())) == EXPECTED
    widened = snapshot(build_definitions(Settings(), ingest_with_rerank=True))
    assert widened["jobs"]["ingest"] == sorted([*INGEST, "rerank_scores"])
    assert {**widened, "jobs": EXPECTED["jobs"]} == EXPECTED
