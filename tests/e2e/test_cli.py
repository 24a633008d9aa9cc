"""The installed `corpusmill` command, as a user runs it (subprocesses, real Dagster instance)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = Path(sys.executable).with_name("corpusmill")


@pytest.fixture
def env(tmp_path, tiny_embedder_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    return {
        **os.environ,
        "CORPUSMILL_DB": str(tmp_path / "db"),
        "CORPUSMILL_MODEL": str(tiny_embedder_path),
        "CORPUSMILL_DTYPE": "float32",
        "CORPUSMILL_CHUNK_TOKENS": "40",
        "CORPUSMILL_CHUNK_OVERLAP": "8",
        "DAGSTER_HOME": str(home),
    }


def run(env, *args):
    out = subprocess.run([str(CLI), *args], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_ingest_then_search(env, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "exceptions.md").write_text("Use try and except to catch an exception in Python.")
    (docs / "loops.txt").write_text("A for loop iterates over the items of a sequence.")
    summary = json.loads(run(env, "ingest", str(docs), "--json").strip().splitlines()[-1])
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

    hits = json.loads(run(env, "search", "catch an exception", "--k", "5", "--json"))
    assert len(hits) == 2
    for hit in hits:
        assert {"text", "score", "doc_id", "chunk_id", "source"} <= set(hit)
    assert hits[0]["score"] >= hits[1]["score"]
    assert {h["doc_id"] for h in hits} == {
        f"{docs.resolve()}#exceptions.md",
        f"{docs.resolve()}#loops.txt",
    }

    again = json.loads(run(env, "ingest", str(docs), "--json").strip().splitlines()[-1])
    assert again["chunks_embedded"] == 0 and again["chunks_reused"] == 2
    # the runs went through the persistent Dagster instance, so the UI shows them
    import dagster as dg

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert len(instance.get_runs()) == 2


def test_search_without_a_store_says_what_to_do(env):
    out = subprocess.run(
        [str(CLI), "search", "anything"], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2
    assert "corpusmill ingest" in out.stderr
