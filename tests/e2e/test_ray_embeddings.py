"""The Ray path for `embeddings`, on a local cluster in a private network namespace, into S3.

All scenarios run in one child process (tests/e2e/ray_scenarios.py) under `unshare --net`
with loopback up, so the cluster starts once and nothing it opens is reachable from
outside. Checked here: the Ray path stores the same rows and vectors as the local path; a
worker whose process is killed mid-job is restarted and the result is still exactly once;
two runs on disjoint shards into one s3:// store leave every chunk once; a driver killed
after the workers wrote fragments but before its commit leaves nothing visible, and the
rerun commits once. (A replayed commit: tests/unit/test_commit_once.py.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tools.netns import netns_argv

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("unshare"),
        reason="a private network namespace needs root and unshare (CI has both)",
    ),
]


@pytest.fixture(scope="module")
def scenarios(tiny_embedder_path, tmp_path_factory) -> dict[str, dict]:
    pytest.importorskip("ray")
    work = tmp_path_factory.mktemp("ray")
    cmd = netns_argv(
        [sys.executable, "-m", "tests.e2e.ray_scenarios", str(tiny_embedder_path), str(work)]
    )
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ}
    )
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith('{"scenario"'):
            record = json.loads(line)
            out[record["scenario"]] = record
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def _by_id(rows):
    return {r["chunk_id"]: r for r in rows}


def _assert_same_as_local(rows, local_rows):
    ids = Counter(r["chunk_id"] for r in rows)
    assert set(ids.values()) == {1}, "a chunk is stored more than once"
    ray_rows, local = _by_id(rows), _by_id(local_rows)
    assert ray_rows.keys() == local.keys()
    for cid, r in ray_rows.items():
        assert r["content_hash"] == local[cid]["content_hash"]
        a, b = np.asarray(r["vector"]), np.asarray(local[cid]["vector"])
        cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
        assert cosine >= 0.9999, f"{cid}: cosine {cosine}"


def test_ray_path_stores_the_local_paths_rows_and_vectors(scenarios):
    s = scenarios["ray-vs-local"]
    assert s["ray"]["success"] and s["ray"]["executor"] == "ray"
    assert s["ray"]["workers"] == 2
    assert 1 <= s["ray"]["model_loads"] <= 2  # one per worker that got a batch
    assert s["ray"]["chunks_embedded"] == s["local"]["chunks_embedded"] == len(s["rows"])
    _assert_same_as_local(s["rows"], s["local_rows"])
    # a rerun finds every chunk embedded and commits nothing new
    assert s["rerun"]["chunks_embedded"] == 0 and s["rerun"]["rows"] == len(s["rows"])


def test_the_ray_path_reports_each_shards_own_counts_as_the_local_path_does(scenarios):
    s = scenarios["ray-vs-local"]
    shards, table = s["shards"], s["rows_per_shard"]
    assert len(shards) == 16  # one observation per shard of the run
    # Each shard's observation holds that shard's rows as the table holds them, not the
    # run total; and the same keys as the local path's.
    assert {p: m["rows"] for p, m in shards.items() if m["rows"]} == table
    assert len({m["rows"] for m in shards.values()}) > 1
    assert shards.keys() == s["local_shards"].keys()
    assert all(m.keys() == s["local_shards"][p].keys() for p, m in shards.items())
    assert {p: m["chunks_embedded"] for p, m in shards.items()} == {
        p: m["chunks_embedded"] for p, m in s["local_shards"].items()
    }
    assert sum(m["chunks_embedded"] for m in shards.values()) == s["ray"]["chunks_embedded"]
    # The materialisation of every shard carries run-level figures, labelled as such: the
    # worker count, each worker's tokens/s, the model loads (one per worker).
    assert len(s["materialisations"]) == 16
    meta = s["materialisations"]["shard-07"]
    assert "rows" not in meta and meta["run_rows"] == sum(table.values())
    assert meta["run_partitions"] == 16 and meta["run_workers"] == 2
    per_worker = json.loads(meta["run_tokens_per_s_per_worker"])
    assert len(per_worker) == meta["run_model_loads"] and all(v > 0 for v in per_worker.values())
    assert meta["device"] == "cpu"  # the workers' device


def test_a_killed_worker_is_retried_and_the_result_is_exactly_once(scenarios):
    """The worker that dies is the test's own (tests/e2e/ray_faults.py), injected as the
    pool's actor class: corpusmill holds no such hook."""
    s = scenarios["killed-worker"]
    assert s["marker"], "no worker was killed: the scenario did not test a retry"
    assert s["summary"]["success"]
    assert s["summary"]["chunks_embedded"] == len(s["rows"])
    _assert_same_as_local(s["rows"], s["local_rows"])


def test_two_disjoint_shard_runs_into_one_s3_store_leave_every_chunk_once(scenarios):
    s = scenarios["disjoint-writers"]
    assert len(s["runs"]) == 2 and all(r["success"] for r in s["runs"])
    ids = Counter(r["chunk_id"] for r in s["rows"])
    assert set(ids.values()) == {1}
    assert len(ids) == sum(r["chunks"] for r in s["runs"])
    assert all(r["chunks_embedded"] > 0 for r in s["runs"])  # both really wrote


def test_a_driver_killed_before_its_commit_leaves_nothing_and_the_rerun_commits_once(
    scenarios,
):
    s = scenarios["driver-killed"]
    assert s["child_exit"] == 17, s["child_tail"]  # it died where the test meant it to
    assert "fragments written" in s["child_tail"]
    assert s["orphan_data_files"] > 0  # the workers had written their fragments
    assert s["visible_before_rerun"] == 0
    assert s["rerun"]["success"] and s["rerun"]["chunks_embedded"] == len(s["rows"])
    ids = Counter(r["chunk_id"] for r in s["rows"])
    assert set(ids.values()) == {1}


def test_the_ray_path_builds_a_new_generation_beside_the_live_one_then_switches(scenarios):
    """On a real cluster into S3: another model's generation (48-d) built by the actors
    through the store's view, every chunk once, the old one kept as the rollback target."""
    run = scenarios["generation-on-ray"]
    assert run["summary"]["success"] and run["summary"]["executor"] == "ray"
    assert run["live"] == run["generation"] != run["previous"]
    assert sorted(run["rows"]) == sorted(run["live_rows"])  # the plain tables: the old one
    assert len(set(run["rows"])) == len(run["rows"]) and run["dimension"] == 48


def test_rerank_scores_on_ray_gives_the_in_process_rows(scenarios):
    """A tiny cross-encoder's pairs scored by Ray actors (`ScoreWorker`) kept resident for
    the run: the rows the in-process run wrote, scores to float32 rounding."""
    s = scenarios["rerank-on-ray"]
    local, ray = s["local"], s["ray"]
    assert local["success"] and ray["success"]
    meta = ray["meta"]
    assert meta.get("executor", meta.get("run_executor")) == "ray", meta
    # The actors live for the whole run (each loads its cross-encoder once), although the
    # driver scores each shard's pairs in its own call: 16 processes when every call
    # started its own actors.
    assert 1 <= meta["worker_processes"] <= meta["workers"] == 2, meta
    want = {r["score_id"]: r for r in local["rows"]}
    have = {r["score_id"]: r for r in ray["rows"]}
    assert len(have) == len(ray["rows"])  # each pair once
    assert have.keys() == want.keys() and len(have) > 10
    for sid, row in have.items():
        assert row["scorer"] == "cross-encoder"
        assert {k: v for k, v in row.items() if k != "score"} == {
            k: v for k, v in want[sid].items() if k != "score"
        }
        assert abs(row["score"] - want[sid]["score"]) <= 1e-5
