"""Writers' leases on an S3 store: one object per shard, created with a conditional put.

`<store>/.locks/<name>.json` is created with `If-None-Match: *`, so of two writers exactly
one creates it; it names its holder (run id, host, pid) and lasts `ttl_s` seconds from its
last write, judged by the server's clock (the object's Last-Modified against the response's
Date), so the contenders' clocks do not matter. While held, a heartbeat thread rewrites it
every `ttl_s / 3` with `If-Match` on the ETag it last wrote; on exit it is deleted with
`If-Match` too, so a writer never removes a lease that is no longer its own. A lease whose
holder stopped renewing (a crashed run) is taken over with `If-Match` on the expired
object's ETag: of two contenders taking it over, one wins.

A contender waits, as the local flock does, up to `wait_s`, then fails naming the holder.
Re-entrant per thread like the flock (an asset holding the lease calls the Searcher, which
takes the whole-store lock again to build an index).

Needs conditional writes: S3 has them (PutObject If-None-Match since 2024-08, If-Match
and DeleteObject If-Match since), moto 5.2.5's server honours all three. `s3+ddb://`
stores, which exist for S3-compatible servers without them, get no lease (see `Store`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

from corpusmill.errors import ConfigError, ShardsBusy, StoreError
from corpusmill.s3 import error_code, s3_client, split_s3_uri

TTL_S = 60.0  # a crashed holder's shards are free this long after its last heartbeat
WAIT_S = 3600.0  # how long a second writer of a shard waits before it gives up
POLL_S = 1.0

_held = threading.local()  # names this thread holds, per store: {(bucket, key): Lease}


# A conditional write that lost: 412, or 409 when S3 saw two conditional writes at once.
_LOST = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_GONE = {"NoSuchKey", "404"}


@dataclass
class Lease:
    """One held lease object: its key and the ETag of this holder's last write."""

    key: str
    etag: str
    body: dict[str, Any]
    lost: bool = False


@dataclass
class S3Leases:
    """The leases of one store (`uri`, an s3:// URI) for one owner (`run_id`)."""

    uri: str
    storage_options: Mapping[str, str] = field(default_factory=dict)
    run_id: str = ""
    ttl_s: float = TTL_S
    wait_s: float = WAIT_S
    poll_s: float = POLL_S
    client: Any = None

    def __post_init__(self) -> None:
        self.bucket, self.prefix = split_s3_uri(self.uri)
        self.client = self.client or s3_client(self.storage_options)

    def key(self, name: str) -> str:
        return f"{self.prefix}/.locks/{name}.json" if self.prefix else f".locks/{name}.json"

    # -- one lease ----------------------------------------------------------------------
    def _body(self, token: str) -> dict[str, Any]:
        now = time.time()
        return {
            "run_id": self.run_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "token": token,  # a fresh ETag for every write, even of the same holder
            "ttl_s": self.ttl_s,
            "written_at": now,
            # For people reading the object; contenders judge by the server's clock.
            "expires_at": now + self.ttl_s,
        }

    def _put(self, key: str, body: dict[str, Any], **condition: str) -> str:
        data = json.dumps(body).encode()
        result = self.client.put_object(
            Bucket=self.bucket, Key=key, Body=data, ContentType="application/json", **condition
        )
        return str(result["ETag"])

    def _read(self, key: str) -> tuple[dict[str, Any], str, bool] | None:
        """The lease object: (holder, ETag, expired by the server's clock), None if gone."""
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if error_code(exc) in _GONE:
                return None
            raise
        raw = got["Body"].read()
        try:
            holder = json.loads(raw)
        except ValueError:
            holder = {"unreadable": raw[:200].decode(errors="replace")}
        date = got.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        now = parsedate_to_datetime(date).timestamp() if date else time.time()
        ttl = float(holder.get("ttl_s", self.ttl_s)) if isinstance(holder, dict) else self.ttl_s
        expired = now - got["LastModified"].timestamp() > ttl
        return holder, str(got["ETag"]), expired

    def acquire(self, name: str, wait_s: float | None = None) -> Lease:
        """Hold `name`: create it, or take it over once expired; wait while another holds
        it, up to `wait_s` (default: the store's), then raise `ShardsBusy` (a
        `StoreError`) naming the holder."""
        key = self.key(name)
        wait_s = self.wait_s if wait_s is None else wait_s
        deadline = time.monotonic() + wait_s
        while True:
            body = self._body(uuid.uuid4().hex)
            try:
                return Lease(key, self._put(key, body, IfNoneMatch="*"), body)
            except Exception as exc:
                if error_code(exc) in {"NotImplemented", "501"}:
                    raise ConfigError(
                        f"the S3 server of {self.uri!r} does not support conditional puts "
                        "(If-None-Match), which shard leases and Lance commits need: use "
                        "s3+ddb://bucket/prefix?ddbTableName=T (README, CORPUSMILL_DB)"
                    ) from exc
                if error_code(exc) not in _LOST:
                    raise
            seen = self._read(key)
            if seen is None:
                continue  # released between our put and our read: try again at once
            holder, etag, expired = seen
            if expired:
                with contextlib.suppress(Exception):  # lost the takeover: wait as before
                    return Lease(key, self._put(key, body, IfMatch=etag), body)
            if time.monotonic() >= deadline:
                raise ShardsBusy(
                    f"shard lease {name!r} of {self.uri!r} is held by run "
                    f"{holder.get('run_id') or '?'} (host {holder.get('host', '?')}, pid "
                    f"{holder.get('pid', '?')}) and was not released within {wait_s:.0f} s; "
                    f"wait for that run, or, if it is gone, for its lease to expire "
                    f"({holder.get('ttl_s', self.ttl_s)} s after its last heartbeat)"
                )
            time.sleep(self.poll_s)

    def renew(self, lease: Lease) -> None:
        """Extend `lease` by rewriting it, only if it is still this holder's write."""
        if lease.lost:
            return
        now = time.time()
        body = {**lease.body, "token": uuid.uuid4().hex, "written_at": now}
        body["expires_at"] = now + self.ttl_s
        try:
            lease.etag, lease.body = self._put(lease.key, body, IfMatch=lease.etag), body
        except Exception as exc:
            if error_code(exc) in _LOST or error_code(exc) in _GONE:
                lease.lost = True  # expired and taken over: another writer holds it now
            # other errors (a network blip): the next heartbeat tries again

    def release(self, lease: Lease) -> None:
        """Delete `lease` if it is still this holder's write."""
        if lease.lost:
            return
        try:
            self.client.delete_object(Bucket=self.bucket, Key=lease.key, IfMatch=lease.etag)
        except Exception as exc:
            if error_code(exc) in _LOST:
                lease.lost = True
            elif error_code(exc) not in _GONE:
                raise

    # -- a set of leases, held for a block ----------------------------------------------
    @contextlib.contextmanager
    def hold(self, names: Sequence[str], wait_s: float | None = None) -> Iterator[list[Lease]]:
        """Hold every lease of `names` (taken in sorted order, so two writers of
        overlapping sets never deadlock), renewed by a heartbeat thread until the block
        ends, then released. Raises `StoreError` at the end if one was lost meanwhile.
        `wait_s`: how long to wait for each (default: the store's `wait_s`)."""
        held: dict[tuple[str, str], Lease] = _held.__dict__.setdefault("leases", {})
        wanted = sorted(set(names))
        mine = [n for n in wanted if (self.bucket, self.key(n)) in held]
        if mine:
            if len(mine) < len(wanted):
                raise RuntimeError(
                    f"this thread holds leases {mine} and asked for more {wanted}: take the "
                    "wider set first (the whole-store lock before any shard's)"
                )
            yield [held[(self.bucket, self.key(n))] for n in wanted]
            return
        leases: list[Lease] = []
        stop = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(leases, stop), name="lease-heartbeat", daemon=True
        )
        try:
            for name in wanted:
                leases.append(self.acquire(name, wait_s))
                held[(self.bucket, leases[-1].key)] = leases[-1]
            beat.start()
            yield leases
        finally:
            stop.set()
            if beat.is_alive():
                beat.join()
            for lease in reversed(leases):
                held.pop((self.bucket, lease.key), None)
                self.release(lease)
        lost = [lease.key for lease in leases if lease.lost]
        if lost:
            raise StoreError(
                f"lost the lease {lost} of {self.uri!r} while writing (no heartbeat for "
                f"{self.ttl_s:.0f} s, then another run took it over); each commit is still "
                "atomic and keyed, so rerun this run to converge"
            )

    def _heartbeat(self, leases: list[Lease], stop: threading.Event) -> None:
        while not stop.wait(self.ttl_s / 3):
            for lease in leases:
                self.renew(lease)
