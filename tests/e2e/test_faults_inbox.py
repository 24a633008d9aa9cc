"""Exactly once under SIGKILL: ingest runs over a changing inbox are killed at random
points, then the sensor's diff asks for what is missing; in the end every chunk of every
file on disk is in the table exactly once, nothing of a deleted file remains, and every
table opens and reads cleanly.

Each run is a real `dagster.materialize` of the ingest assets (tiny embedder, real LanceDB)
in a child process forked from a forkserver that imported the heavy modules once, so a
trial costs the run itself rather than a fresh interpreter. The daemon itself is killed in
tests/e2e/test_daemon_inbox.py.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
from pathlib import Path

import dagster as dg
import pytest

from tests.e2e.daemon_harness import CHUNKS, expected_chunks, stored_chunks

LIVE_KILLS = int(os.environ.get("CORPUSMILL_FAULT_TRIALS", "10"))
WORDS = [
    "lance",
    "dagster",
    "shard",
    "vector",
    "token",
    "chunk",
    "river",
    "mountain",
    "violin",
    "zebra",
    "comet",
    "harbour",
]


def ingest_round(inbox: str, db: str, model: str) -> None:
    """What one sensor tick plus its run do: diff the inbox against the store, then run the
    ingest job over the touched shards. Runs in the child that gets killed."""
    from app.runs import run_ingest
    from corpusmill.inbox import diff, read_committed, scan_inbox, touched_partitions
    from corpusmill.sources import ReadOptions
    from corpusmill.store import Store
    from tests.runs import tiny_settings

    changes = diff(
        scan_inbox(inbox, ReadOptions(max_file_bytes=1 << 20)), read_committed(Store(db))
    )
    if not changes:
        return
    run_ingest(
        [f"inbox={inbox}"],
        tiny_settings(db, model),
        partitions=touched_partitions(changes),
        chunk_config={
            "chunk_tokens": int(CHUNKS["CORPUSMILL_CHUNK_TOKENS"]),
            "chunk_overlap": int(CHUNKS["CORPUSMILL_CHUNK_OVERLAP"]),
        },
        instance=dg.DagsterInstance.ephemeral(),
    )


def _nothing() -> None:
    pass


def _text(rng: random.Random) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(20, 120)))


def _mutate(inbox: Path, rng: random.Random, serial: list[int]) -> None:
    files = sorted(p for p in inbox.rglob("*.txt"))
    for _ in range(rng.randint(1, 4)):
        serial[0] += 1
        (inbox / f"d{serial[0] % 3}" / f"new{serial[0]}.txt").write_text(_text(rng))
    for path in rng.sample(files, min(len(files), rng.randint(1, 3))):
        path.write_text(_text(rng))
    if files and rng.random() < 0.7:
        rng.choice(files).unlink(missing_ok=True)


def _check_tables_open(db: str) -> None:
    from corpusmill.store import Store

    store = Store(db)
    for name in ("documents", "chunks", "embeddings", "quarantine"):
        table = store.open(name)
        assert table is not None, name
        full = table.to_arrow()  # reads every fragment of the latest version
        assert full.num_rows == table.count_rows()


@pytest.mark.slow
def test_sigkill_runs_at_random_points_then_exactly_once(tmp_path, tiny_embedder_path):
    rng = random.Random(int(os.environ.get("CORPUSMILL_FAULT_SEED", "20261127")))
    inbox, db, model = tmp_path / "inbox", str(tmp_path / "lancedb"), str(tiny_embedder_path)
    for d in range(3):
        (inbox / f"d{d}").mkdir(parents=True)
    serial = [0]
    _mutate(inbox, rng, serial)
    for _ in range(12):
        serial[0] += 1
        (inbox / f"d{serial[0] % 3}" / f"seed{serial[0]}.txt").write_text(_text(rng))

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(
        ["definitions", "app.runs", "corpusmill.inbox", "torch", "transformers"]
    )
    args = (str(inbox), db, model)

    # Start the forkserver (it imports the preloads once), then time a run nobody kills.
    warm = ctx.Process(target=_nothing)
    warm.start()
    warm.join(300)
    t0 = time.monotonic()
    first = ctx.Process(target=ingest_round, args=args)
    first.start()
    first.join(300)
    assert first.exitcode == 0
    duration = time.monotonic() - t0

    live_kills, trials = 0, 0
    while live_kills < LIVE_KILLS and trials < 3 * LIVE_KILLS:
        trials += 1
        _mutate(inbox, rng, serial)
        child = ctx.Process(target=ingest_round, args=args)
        child.start()
        time.sleep(rng.uniform(0.2, duration))
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)
            live_kills += 1
        child.join(300)
    assert live_kills >= LIVE_KILLS, (
        f"only {live_kills} of {trials} runs were still running when killed"
    )

    # Recovery: rounds until the diff is empty (the sensor would keep asking until then).
    for _ in range(3):
        ingest_round(*args)
    from corpusmill.inbox import diff, read_committed, scan_inbox
    from corpusmill.sources import ReadOptions
    from corpusmill.store import Store

    assert (
        diff(scan_inbox(inbox, ReadOptions(max_file_bytes=1 << 20)), read_committed(Store(db)))
        == []
    )
    _check_tables_open(db)
    expected = expected_chunks(inbox, tiny_embedder_path)
    assert stored_chunks(db, "embeddings") == expected, "each chunk of each file exactly once"
    assert stored_chunks(db, "chunks") == expected
    on_disk = {f"inbox#{p.relative_to(inbox).as_posix()}" for p in inbox.rglob("*.txt")}
    docs = set(Store(db).scan("documents", ["doc_id"], "source = 'inbox'")["doc_id"].to_pylist())
    assert docs == on_disk, "documents of deleted files remain, or files are missing"
    print(f"{live_kills} runs killed mid-way in {trials} trials (a run takes {duration:.1f}s here)")
