"""The installed `corpusmill` command, as a user runs it (subprocesses, real Dagster instance)."""

import json
import subprocess

import pytest

from corpusmill.errors import StoreError
from tests.e2e.procs import BIN, run_cli

CLI = BIN / "corpusmill"


@pytest.mark.slow  # two CLI processes, each importing torch and Dagster, plus an ingest
def test_ingest_then_search(cli_env, tmp_path):
    env = cli_env
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "exceptions.md").write_text("Use try and except to catch an exception in Python.")
    (docs / "loops.txt").write_text("A for loop iterates over the items of a sequence.")
    summary = json.loads(run_cli(env, "ingest", str(docs), "--json").strip().splitlines()[-1])
    for key in (
        "documents",
        "chunks",
        "chunks_embedded",
        "chunks_reused",
        "tokens",
        "tokens_per_s",
        "seconds",
    ):
        assert key in summary
    assert summary["documents"] == 2 and summary["chunks_embedded"] == summary["chunks"] == 2

    hits = json.loads(run_cli(env, "search", "catch an exception", "--k", "5", "--json"))
    assert len(hits) == 2
    for hit in hits:
        assert {"text", "score", "doc_id", "chunk_id", "source"} <= set(hit)
    assert hits[0]["score"] >= hits[1]["score"]
    assert {h["doc_id"] for h in hits} == {
        f"{docs.resolve()}#exceptions.md",
        f"{docs.resolve()}#loops.txt",
    }

    again = json.loads(run_cli(env, "ingest", str(docs), "--json").strip().splitlines()[-1])
    assert again["chunks_embedded"] == 0 and again["chunks_reused"] == 2
    # the runs went through the persistent Dagster instance, so the UI shows them
    import dagster as dg

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert len(instance.get_runs()) == 2


def test_search_without_a_store_says_what_to_do(cli_env):
    env = cli_env
    out = subprocess.run(
        [str(CLI), "search", "anything"], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == StoreError.exit_code  # 5: the store is not there yet
    assert "corpusmill ingest" in out.stderr


@pytest.mark.slow  # CLI processes, each importing torch and Dagster
def test_generations_commands_list_build_promote_rollback_drop(cli_env, tmp_path):
    """`corpusmill generations`, each with --json, as an operator runs them after pointing
    CORPUSMILL_MODEL at another model (here of another dimension)."""
    from tests.generations import save_model_b

    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"d{i}.txt").write_text(f"document {i} about rivers and harbours " * 5)
    env = {**cli_env, "CORPUSMILL_PROMOTE": "manual"}
    run_cli(env, "ingest", str(docs), "--json")
    [a] = json.loads(run_cli(env, "generations", "list", "--json"))
    assert a["state"] == "live" and a["shards_complete"] == 16 and a["checks"]["passed"]

    env_b = {**env, "CORPUSMILL_MODEL": str(save_model_b(tmp_path, "other-dimension"))}
    built = json.loads(run_cli(env_b, "generations", "build", "--json").strip().splitlines()[-1])
    b = built["generation"]
    assert built["success"] and built["documents"] == 0  # nothing read from the sources
    assert built["chunks_embedded"] == built["chunks"] > 0 and built["live_generation"] == a["id"]
    listed = {g["id"]: g for g in json.loads(run_cli(env_b, "generations", "list", "--json"))}
    assert listed[b]["state"] == "ready" and listed[b]["dimension"] == 48

    # Search answers from the live generation, with its model, whatever is configured.
    hits = json.loads(run_cli(env_b, "search", "rivers", "--json"))
    assert hits and all(h["doc_id"].startswith(str(docs.resolve())) for h in hits)
    assert json.loads(run_cli(env_b, "generations", "promote", b, "--json"))["live"] == b
    assert json.loads(run_cli(env_b, "generations", "rollback", "--json"))["live"] == a["id"]
    assert json.loads(run_cli(env_b, "generations", "promote", b, "--json"))["done"]
    refused = subprocess.run(
        [str(CLI), "generations", "drop", b, "--json"], env=env_b, capture_output=True, text=True
    )
    assert refused.returncode == 2 and "live generation" in refused.stderr
    dropped = json.loads(run_cli(env_b, "generations", "drop", a["id"], "--json"))
    assert dropped["done"] and sorted(dropped["figures"]["tables_dropped"]) == [
        "chunks",
        "embeddings",
    ]
    assert [g["id"] for g in json.loads(run_cli(env_b, "generations", "list", "--json"))] == [b]
