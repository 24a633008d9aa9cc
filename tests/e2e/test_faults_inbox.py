"""Exactly once under SIGKILL: ingest runs over a changing inbox are killed at random
points, then the sensor's diff asks for what is missing; in the end every chunk of every
file on disk is in the table exactly once, nothing of a deleted file remains, and every
table opens and reads cleanly. The same for an inbox on `s3://` (moto's server on
127.0.0.1): a local folder is changed as before and mirrored to the prefix (new and changed
files put, deleted ones deleted) before each run.

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


def ingest_round(inbox: str, db: str, model: str, options: dict | None = None) -> None:
    """What one sensor tick plus its run do: diff the inbox (a folder or an s3:// prefix)
    against the store, then run the ingest job over the touched shards. Runs in the child
    that gets killed."""
    from app.runs import run_ingest
    from corpusmill.inbox import diff, read_committed, scan_inbox, touched_partitions
    from corpusmill.sources import ReadOptions
    from corpusmill.store import Store
    from tests.runs import tiny_settings

    read = ReadOptions(max_file_bytes=1 << 20, storage_options=options or {})
    committed = read_committed(Store(db))
    changes = diff(scan_inbox(inbox, read, committed=committed), committed)
    if not changes:
        return
    run_ingest(
        [f"inbox={inbox}"],
        tiny_settings(db, model, options),
        partitions=touched_partitions(changes),
        chunk_config={
            "chunk_tokens": int(CHUNKS["CORPUSMILL_CHUNK_TOKENS"]),
            "chunk_overlap": int(CHUNKS["CORPUSMILL_CHUNK_OVERLAP"]),
        },
        instance=dg.DagsterInstance.ephemeral(),
    )


class Mirror:
    """The inbox a run reads: the local folder itself, or its copy under an s3:// prefix,
    brought up to date (`sync`) after each change of the folder."""

    def __init__(self, folder: Path, s3=None, prefix: str = "") -> None:
        self.folder, self.s3, self.prefix = folder, s3, prefix
        self.client = s3.client() if s3 is not None else None

    @property
    def spec(self) -> str:
        return self.s3.uri(self.prefix) if self.s3 is not None else str(self.folder)

    @property
    def options(self) -> dict | None:
        return self.s3.storage_options if self.s3 is not None else None

    def sync(self) -> None:
        if self.client is None:
            return
        bucket = self.s3.bucket
        local = {p.relative_to(self.folder).as_posix(): p for p in self.folder.rglob("*.txt")}
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{self.prefix}/"
        )
        remote = {o["Key"] for page in pages for o in page.get("Contents", ())}
        for key, path in local.items():
            self.client.put_object(
                Bucket=bucket, Key=f"{self.prefix}/{key}", Body=path.read_bytes()
            )
        for name in remote - {f"{self.prefix}/{k}" for k in local}:
            self.client.delete_object(Bucket=bucket, Key=name)


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
@pytest.mark.parametrize("where", ["folder", "s3"])
def test_sigkill_runs_at_random_points_then_exactly_once(
    where, tmp_path, tiny_embedder_path, request
):
    rng = random.Random(int(os.environ.get("CORPUSMILL_FAULT_SEED", "20261127")))
    folder, db, model = tmp_path / "inbox", str(tmp_path / "lancedb"), str(tiny_embedder_path)
    s3 = request.getfixturevalue("local_s3") if where == "s3" else None
    inbox = Mirror(folder, s3, f"inbox-{tmp_path.name}")
    for d in range(3):
        (folder / f"d{d}").mkdir(parents=True)
    serial = [0]
    _mutate(folder, rng, serial)
    for _ in range(12):
        serial[0] += 1
        (folder / f"d{serial[0] % 3}" / f"seed{serial[0]}.txt").write_text(_text(rng))
    inbox.sync()

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(
        ["definitions", "app.runs", "corpusmill.inbox", "torch", "transformers"]
    )
    args = (inbox.spec, db, model, inbox.options)

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
        _mutate(folder, rng, serial)
        inbox.sync()
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

    read = ReadOptions(max_file_bytes=1 << 20, storage_options=inbox.options or {})
    assert diff(scan_inbox(inbox.spec, read), read_committed(Store(db))) == []
    _check_tables_open(db)
    expected = expected_chunks(folder, tiny_embedder_path)
    assert stored_chunks(db, "embeddings") == expected, "each chunk of each file exactly once"
    assert stored_chunks(db, "chunks") == expected
    on_disk = {f"inbox#{p.relative_to(folder).as_posix()}" for p in folder.rglob("*.txt")}
    docs = set(Store(db).scan("documents", ["doc_id"], "source = 'inbox'")["doc_id"].to_pylist())
    assert docs == on_disk, "documents of deleted files remain, or files are missing"
    print(
        f"{where}: {live_kills} runs killed mid-way in {trials} trials (a run takes {duration:.1f}s here)"
    )
