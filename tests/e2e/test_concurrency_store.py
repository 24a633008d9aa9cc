"""Writers on the same partitions: what keeps rows exactly once.

LanceDB commits concurrent `merge_insert`s optimistically: a writer whose table handle was
opened before another writer committed joins against the old version, and unless the key
column is declared a Lance primary key both inserts of the same new key succeed and the
table holds the row twice. The first test forces that interleaving (every writer reads,
then every writer writes) and shows it duplicates rows on a table without a declared key
and no lock (the control), and does not with the key declared, with or without
`Store.write_lock()` (the lock is what object stores do without). It fails every time
either stops working, not by chance. The second shows each ingest asset waits for the
lock before it writes (so it fails if an asset stops taking it): the test holds the lock
until the kernel lists the run's thread as blocked on it (/proc/locks), then checks that
nothing was written.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from collections import Counter
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from corpusmill.ids import ALL_PARTITIONS
from corpusmill.store import Store, documents_schema, quarantine_schema
from tests.e2e.daemon_harness import documents_writer
from tests.waiting import lock_waiters, wait_for

WRITERS = 3


def _race(tmp_path: Path, locked: bool, keys: bool) -> tuple[Counter, list]:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(300):
        (inbox / f"f{i:03d}.txt").write_text(f"file {i} about writers racing on one table " * 3)
    db = str(tmp_path / "db")
    # The tables exist before the race, so what races is the writes, not the creation of
    # a table (which unlocked writers can also trip over, one of them failing to open a
    # table another is still creating).
    store = Store(db)
    if keys:
        store.ensure("documents", documents_schema())
        store.ensure("quarantine", quarantine_schema())
    else:  # tables as corpusmill made them before keys were declared
        for name, schema in (
            ("documents", documents_schema()),
            ("quarantine", quarantine_schema()),
        ):
            plain = pa.schema([pa.field(f.name, f.type) for f in schema])
            store.db.create_table(name, schema=plain)
    ctx = mp.get_context("spawn")
    start, before_write = ctx.Barrier(WRITERS), ctx.Barrier(WRITERS)
    # Locked, the lock holder waits this long alone; unlocked, every writer arrives, so a
    # long timeout costs nothing and keeps a slow machine from breaking the rendezvous.
    rendezvous_seconds = 8.0 if locked else 120.0
    procs = [
        ctx.Process(
            target=documents_writer,
            args=(str(inbox), db, locked, start, before_write, rendezvous_seconds, keys),
        )
        for _ in range(WRITERS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    store = Store(db)
    docs = Counter(store.scan("documents", ["doc_id"])["doc_id"].to_pylist())
    return docs, [p.exitcode for p in procs]


@pytest.mark.slow
@pytest.mark.parametrize(
    "locked,keys",
    [(True, True), (False, True), (False, False)],
    ids=["lock-and-keys", "keys-without-lock", "neither"],
)
def test_concurrent_writers_exactly_once_with_the_lock_or_the_keys(tmp_path, locked, keys):
    docs, exits = _race(tmp_path, locked, keys)
    duplicated = sum(n - 1 for n in docs.values())
    assert exits == [0] * WRITERS
    assert len(docs) == 300
    if locked or keys:
        assert duplicated == 0, f"{duplicated} duplicate rows (lock={locked}, keys={keys})"
    else:
        # The control: the same interleaving with neither does duplicate rows, so the
        # assertions above are ones the race could break.
        assert duplicated > 0, "every writer read before any wrote, yet nothing duplicated"


@pytest.mark.parametrize("asset_name", ["raw_corpus", "chunked_documents", "embeddings"])
def test_each_ingest_asset_waits_for_the_store_lock(
    tmp_path, db_uri, tiny_embedder_path, asset_name
):
    from assets.corpus import chunked_documents, raw_corpus
    from assets.embeddings import embeddings
    from assets.partitions import partition_range_tags
    from resources import build_resources
    from tests.runs import tiny_settings

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(5):
        (inbox / f"f{i}.txt").write_text(f"document {i} waits for the lock")
    order = [raw_corpus, chunked_documents, embeddings]
    target = next(a for a in order if a.key.path[-1] == asset_name)
    upstream = order[: order.index(target)]
    instance = dg.DagsterInstance.ephemeral()
    kwargs = dict(
        instance=instance,
        tags=partition_range_tags(ALL_PARTITIONS),
        resources=build_resources(tiny_settings(db_uri, tiny_embedder_path)),
    )
    ops = {
        "raw_corpus": {"config": {"sources": [f"inbox={inbox}"]}},
        "chunked_documents": {"config": {"chunk_tokens": 24, "chunk_overlap": 4}},
    }

    def config_for(assets):
        names = {a.key.path[-1] for a in assets}
        return {"ops": {k: v for k, v in ops.items() if k in names}}

    if upstream:
        assert dg.materialize(upstream, run_config=config_for(upstream), **kwargs).success
    table = {"raw_corpus": "documents", "chunked_documents": "chunks", "embeddings": "embeddings"}[
        asset_name
    ]
    store = Store(db_uri)
    before = store.version(table)
    results = []
    with store.write_lock():
        worker = threading.Thread(
            target=lambda: results.append(
                dg.materialize([target], run_config=config_for([target]), **kwargs)
            )
        )
        worker.start()
        # Not a sleep "long enough to have written": the kernel says when the run's thread
        # is blocked on one of the store's lock files (or the run ended without blocking).
        wait_for(
            lambda: lock_waiters(db_uri) or not worker.is_alive(),
            120,
            f"{asset_name} to wait for the store lock",
        )
        assert lock_waiters(db_uri), f"{asset_name} ran to the end while the lock was held"
        assert store.version(table) == before, (
            f"{asset_name} wrote while another writer held the lock"
        )
    worker.join(120)
    assert results and results[0].success
    assert store.version(table) > before
