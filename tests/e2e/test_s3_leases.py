"""Shard leases on S3 (corpusmill/store/lease.py) against moto's server on 127.0.0.1.

Two contenders for one shard: exactly one holds it at any moment, the other waits and then
holds it; disjoint shards are held at once; a lease whose holder stopped renewing is taken
over; a writer that waits too long is told who holds the shard; release deletes the object.
"""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from corpusmill.errors import StoreError
from corpusmill.store import Store
from corpusmill.store.lease import S3Leases


@pytest.fixture
def leases(s3_store):
    uri, options = s3_store

    def make(run_id: str, **kw) -> S3Leases:
        return S3Leases(uri, options, run_id=run_id, **{"poll_s": 0.05, **kw})

    return make


def _other_writer(fn):
    """Run `fn` in a thread of its own, as another writer would (a thread that holds a
    lease gets it again at once, as with the local flock); returns or raises what it did."""
    out: dict = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # handed back to the caller
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join(60)
    if "error" in out:
        raise out["error"]
    return out.get("value")


def _hold_briefly(leases: S3Leases, names: list[str]) -> None:
    with leases.hold(names):
        pass


def _exists(leases: S3Leases, name: str) -> bool:
    found = leases.client.list_objects_v2(Bucket=leases.bucket, Prefix=leases.key(name))
    return found.get("KeyCount", 0) > 0


class RefusalsSeen:
    """The S3 client of one contender, passed through, that sets `refused` when a
    conditional create of a lease (If-None-Match) is turned down: the lease was held."""

    def __init__(self, client) -> None:
        self._client = client
        self.refused = threading.Event()

    def put_object(self, **kw):
        try:
            return self._client.put_object(**kw)
        except Exception:
            if "IfNoneMatch" in kw:
                self.refused.set()
            raise

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_two_contenders_for_one_shard_hold_it_one_at_a_time(leases, s3_store):
    from corpusmill.store.lease import s3_client

    inside, most, order = [0], [0], []
    guard = threading.Lock()
    start = threading.Barrier(2)
    clients = {f"run-{i}": RefusalsSeen(s3_client(s3_store[1])) for i in range(2)}

    def writer(run_id: str) -> None:
        other = clients["run-1" if run_id == "run-0" else "run-0"]
        start.wait(10)
        with leases(run_id, client=clients[run_id]).hold(["shard-03"]):
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                order.append(run_id)
                first = len(order) == 1
            if first:  # hold it until the other one has tried and been turned away
                assert other.refused.wait(30), "the other contender never tried"
            with guard:
                inside[0] -= 1

    threads = [threading.Thread(target=writer, args=(f"run-{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(order) == ["run-0", "run-1"]  # both got it, in turn
    assert most[0] == 1


def test_disjoint_shards_are_held_at_once(leases):
    a, b = leases("run-a", wait_s=2), leases("run-b", wait_s=2)
    seen = []

    def b_writes() -> None:
        with b.hold(["shard-02"]):
            seen.append(all(_exists(a, n) for n in ("shard-00", "shard-01", "shard-02")))

    with a.hold(["shard-00", "shard-01"]):
        _other_writer(b_writes)  # does not wait: 2 s would raise
    assert seen == [True]


def test_a_second_writer_waits_then_fails_naming_the_holder(leases):
    with leases("run-holder").hold(["shard-05"]):
        t0 = time.monotonic()
        with pytest.raises(StoreError, match=r"held by run run-holder \(host .*pid \d+\)"):
            _other_writer(lambda: _hold_briefly(leases("run-late", wait_s=0.5), ["04", "shard-05"]))
        assert time.monotonic() - t0 >= 0.5
        assert not _exists(leases("x"), "04")  # what it took first is given back


def test_a_held_lease_is_renewed_and_not_taken_over(leases):
    with leases("run-alive", ttl_s=1.5).hold(["shard-06"]):
        time.sleep(2.5)  # past the ttl: only the heartbeat keeps it
        with pytest.raises(StoreError, match="run-alive"):
            _other_writer(lambda: _hold_briefly(leases("run-late", wait_s=0.5), ["shard-06"]))


def test_an_expired_lease_is_taken_over(leases):
    crashed = leases("run-crashed", ttl_s=1.0)
    crashed.acquire("shard-07")  # and never renewed nor released: a crashed holder
    late = leases("run-late", wait_s=10)
    t0 = time.monotonic()

    def take_over():
        with late.hold(["shard-07"]) as held:
            waited = time.monotonic() - t0
            return waited, late.client.get_object(Bucket=late.bucket, Key=held[0].key)

    waited, got = _other_writer(take_over)
    holder = json.loads(got["Body"].read())
    assert holder["run_id"] == "run-late" and holder["pid"] == os.getpid()
    assert holder["expires_at"] == pytest.approx(holder["written_at"] + late.ttl_s)
    assert 0.5 <= waited < 8  # it waited for the expiry (whole seconds on the server)


def test_release_deletes_the_object_only_if_still_ours(leases):
    mine = leases("run-1")
    with mine.hold(["shard-08"]):
        assert _exists(mine, "shard-08")
    assert not _exists(mine, "shard-08")
    # A lease taken over after expiry is not deleted by its old holder.
    old = leases("run-old", ttl_s=1.0)
    stale = old.acquire("shard-09")
    new = leases("run-new", wait_s=10)

    def take_over_then_old_releases():
        with new.hold(["shard-09"]):
            old.release(stale)
            return _exists(mine, "shard-09")

    assert _other_writer(take_over_then_old_releases) and stale.lost


def test_store_write_lock_on_s3_takes_the_shard_leases(s3_store):
    uri, options = s3_store
    store = Store(uri, options, owner="run-store")
    with store.write_lock(["shard-10"]):
        assert _exists(store.leases, "shard-10")
        with store.write_lock(["shard-10"]):  # re-entrant in the holding thread
            pass
        with pytest.raises(RuntimeError, match="wider set first"), store.write_lock():
            pass
    assert not _exists(store.leases, "shard-10")
