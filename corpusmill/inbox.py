"""The watched inbox (a folder, or an `s3://` prefix): what it holds now, what the store has
committed, and the diff.

The store is the only durable state. A change is "done" once the `embeddings` table holds
the document's chunks at its current content hash; until then the change is still pending
and the sensor keeps asking for it, so a run that was killed half way is simply asked for
again. Nothing is remembered in the sensor cursor that the store does not confirm.

Reading the inbox uses the readers of `corpusmill.sources` (the ones the run uses), so the
sensor and the run agree on doc ids, content hashes, uris and quarantine reasons. A
signature cache keeps a tick over many unchanged files from re-reading them: a file is
re-read (and re-hashed) whenever its inode, size, mtime or ctime moved, and changes are
decided by content hash, never by the stat alone. An object is re-read when its ETag or
size moved; an object whose signature is the one its stored row carries is not read even
by a code server that has just started (its stored hash stands), so an unchanged bucket
costs one listing. No Dagster here.

Memory of a tick: the listing streams (a page of keys at a time) and one object's bytes
are held while it is read; what stays is one compact entry per document (id, hash, uri)
in the listing and in the committed state, and the cache's per-file signature.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from corpusmill.ids import ALL_PARTITIONS, content_hash, doc_id_for, doc_key, partition_of
from corpusmill.s3 import s3_client, split_s3_uri
from corpusmill.sources import (
    TRANSIENT_REASONS,
    Document,
    Quarantined,
    ReadOptions,
    SetAside,
    is_object_uri,
    list_folder,
    read_file,
)
from corpusmill.sources.objects import list_objects, read_object, signature

INBOX_LABEL = "inbox"


@dataclass(frozen=True, slots=True)
class Seen:
    """What one document of the inbox is now: its id, content hash and where it came from."""

    doc_id: str
    content_hash: str
    uri: str


@dataclass
class Listing:
    """The inbox as read by one tick."""

    docs: dict[str, Seen] = field(default_factory=dict)
    # Documents of objects whose signature is the one their stored row carries: not read,
    # their stored hash stands (an id each, not a `Seen`: a bucket may hold millions).
    as_stored: set[str] = field(default_factory=set)
    quarantined: dict[str, Quarantined] = field(default_factory=dict)  # by quarantine id
    protected_uris: set[str] = field(default_factory=set)  # quarantined files keep old rows
    files: int = 0
    files_read: int = 0  # files actually opened this tick (the rest came from the cache)
    seconds: float = 0.0

    def add(self, items: Iterable[Seen | Quarantined]) -> None:
        for item in items:
            if isinstance(item, Quarantined):
                self.quarantined[quarantine_id(item)] = item
                self.protected_uris.add(item.uri)
            else:
                self.docs[item.doc_id] = item


def quarantine_id(q: Quarantined, stage: str = "source") -> str:
    """The id `corpusmill.sync` gives a quarantine row."""
    return content_hash(stage, q.doc_id, q.uri)


def _signature(path: Path) -> tuple | None:
    """Stat signature of a regular file; None for anything else (symlinks are re-read every
    tick because their target can move without the link's own stat changing)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    if not os.path.isfile(path) or os.path.islink(path):
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class StatCache:
    """path or object uri -> (signature, what reading it yielded): a file's stat signature,
    an object's ETag-and-size `signature`. Lives as long as the process that evaluates the
    sensor (the code server), so only changed files are re-read each tick."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[object, list]] = {}

    def get(self, path: Path | str, sig: object | None) -> list | None:
        if sig is None:
            return None
        hit = self._items.get(str(path))
        return hit[1] if hit is not None and hit[0] == sig else None

    def put(self, path: Path | str, sig: object | None, items: list) -> None:
        # A file that vanished mid-read may come back: never cache that outcome.
        if sig is not None and not any(
            isinstance(i, Quarantined) and i.reason in TRANSIENT_REASONS for i in items
        ):
            self._items[str(path)] = (sig, items)

    def retain(self, paths: set[str]) -> None:
        for stale in set(self._items) - paths:
            del self._items[stale]

    def __len__(self) -> int:
        return len(self._items)


def scan_inbox(
    root: str | Path,
    options: ReadOptions,
    *,
    cache: StatCache | None = None,
    label: str = INBOX_LABEL,
    committed: Committed | None = None,
) -> Listing:
    """Read every candidate file of the inbox (or take it from `cache` if its signature is
    unchanged). A missing inbox is an empty one. `root` may be an `s3://` prefix: then
    `committed` (the store's state, read first) stands in for an object whose signature
    is the stored one."""
    if is_object_uri(str(root)):
        return _scan_objects(str(root), options, cache, label, committed or Committed())
    t0 = time.perf_counter()
    out = Listing()
    root = Path(root).expanduser()
    if not root.is_dir():
        out.seconds = time.perf_counter() - t0
        return out
    root = root.resolve()
    seen_paths: set[str] = set()
    for path, key in list_folder(root):
        out.files += 1
        seen_paths.add(str(path))
        sig = _signature(path)
        items = cache.get(path, sig) if cache is not None else None
        if items is None:
            out.files_read += 1
            items = [_compact(i) for i in read_file(path, key, label, _all, options, root=root)]
            if cache is not None:
                cache.put(path, sig, items)
        out.add(items)
    if cache is not None:
        cache.retain(seen_paths)
    out.seconds = time.perf_counter() - t0
    return out


def _scan_objects(
    uri: str, options: ReadOptions, cache: StatCache | None, label: str, committed: Committed
) -> Listing:
    """`scan_inbox` for an `s3://` prefix: one paginated listing; an object is read only
    when neither the cache nor its stored row knows its signature."""
    t0 = time.perf_counter()
    out = Listing()
    client = s3_client(options.storage_options)
    bucket, prefix = split_s3_uri(uri)
    cached: set[str] = set()  # uris of the listed objects the cache holds
    try:
        for obj in list_objects(client, bucket, prefix):
            out.files += 1
            sig = signature(obj.etag, obj.size)
            if not obj.records:
                doc_id = doc_id_for(label, obj.key)
                if doc_id in committed.documents and committed.signatures.get(doc_id) == sig:
                    out.as_stored.add(doc_id)  # neither read nor cached: the store knows it
                    continue
            items = cache.get(obj.uri, sig) if cache is not None else None
            if items is None:
                out.files_read += 1
                read = list(read_object(client, bucket, obj, label, _all, options))
                items = [_compact(i) for i in read]
                # Cached under the signature of the bytes read (the listing's may be older).
                sig = next((i.signature for i in read if isinstance(i, Document)), sig)
                if cache is not None:
                    cache.put(obj.uri, sig, items)
            if cache is not None:
                cached.add(obj.uri)
            out.add(items)
    except FileNotFoundError:  # no such bucket: an empty inbox, as a missing folder is
        pass
    if cache is not None:
        cache.retain(cached)
    out.seconds = time.perf_counter() - t0
    return out


def _all(_doc_id: str) -> bool:
    return True


def _compact(item: Document | Quarantined) -> Seen | Quarantined:
    """Keep the hash, not the text: the cache holds 10,000s of files."""
    if isinstance(item, Document):
        return Seen(item.doc_id, item.content_hash, item.uri)
    return item


# -- committed state ------------------------------------------------------------------
@dataclass
class Committed:
    """What the store holds for the inbox source."""

    documents: dict[str, tuple[str, str]] = field(default_factory=dict)  # doc_id -> (uri, hash)
    # doc_id -> the signature of the object its row was read from (objects only)
    signatures: dict[str, str] = field(default_factory=dict)
    embedded: dict[str, frozenset[str]] = field(default_factory=dict)  # doc_id -> doc hashes
    quarantine: dict[str, tuple[str, str]] = field(default_factory=dict)  # qid -> (doc_id, reason)
    version: str = ""  # table versions: changes whenever anything is committed
    seconds: float = 0.0


def _pairs_by_key(rows) -> dict[str, tuple[str, str]]:
    """A three-column scan as {first column: (second, third)}."""
    key, a, b = (rows.column(i).to_pylist() for i in range(3))
    return {k: (x, y) for k, x, y in zip(key, a, b, strict=True)}


def read_committed(store, label: str = INBOX_LABEL, generations: Sequence = ()) -> Committed:
    """Scan the three tables the inbox writes, only the columns the diff needs.
    `generations`: store views (`Store.for_generation`) of every generation a run keeps in
    sync; a document counts as embedded at a hash only if each of them holds it there, so
    a run killed between two generations' commits is asked for again. None given: the
    store's own `embeddings`."""
    from corpusmill.store import all_of, eq_filter

    t0 = time.perf_counter()
    out = Committed()
    of_source = eq_filter("source", label)
    table = store.open("documents")
    signed = table is not None and "signature" in table.schema.names
    docs = store.scan(
        "documents",
        ["doc_id", "uri", "content_hash"] + (["signature"] if signed else []),
        of_source,
    )
    ids = docs["doc_id"].to_pylist()  # one string per id, shared by both maps
    pairs = zip(docs["uri"].to_pylist(), docs["content_hash"].to_pylist(), strict=True)
    out.documents = dict(zip(ids, pairs, strict=True))
    if signed and docs.num_rows:
        sigs = docs["signature"].to_pylist()
        out.signatures = {d: sig for d, sig in zip(ids, sigs, strict=True) if sig}
    views = list(generations) or [store]
    per_view = [
        _embedded(view.scan("embeddings", ["doc_id", "doc_hash"], of_source)) for view in views
    ]
    # Held by any generation (a deletion must reach all); at the hashes all of them hold.
    held = set().union(*per_view)
    out.embedded = {
        d: frozenset.intersection(*(e.get(d, frozenset()) for e in per_view)) for d in sorted(held)
    }
    out.quarantine = _pairs_by_key(
        store.scan(
            "quarantine",
            ["quarantine_id", "doc_id", "reason"],
            all_of(of_source, eq_filter("stage", "source")),
        )
    )
    versions = [store.version("documents"), store.version("quarantine")]
    versions += [view.version("embeddings") for view in views]
    out.version = ".".join(map(str, versions))
    out.seconds = time.perf_counter() - t0
    return out


def _embedded(rows) -> dict[str, frozenset[str]]:
    """doc_id -> the document hashes its embedded chunks came from."""
    if not rows.num_rows:
        return {}
    pairs = rows.group_by(["doc_id", "doc_hash"]).aggregate([])
    grouped: dict[str, set[str]] = {}
    for d, h in zip(pairs["doc_id"].to_pylist(), pairs["doc_hash"].to_pylist(), strict=True):
        grouped.setdefault(d, set()).add(h)
    return {d: frozenset(hs) for d, hs in grouped.items()}


# -- the diff ---------------------------------------------------------------------------
NEW, CHANGED, PENDING, DELETED, QUARANTINED, CLEARED = (
    "new",
    "changed",
    "pending",  # stored document, but its vectors are missing or stale (a killed run)
    "deleted",
    "quarantined",
    "cleared",  # a quarantine row whose file is gone or fixed
)


@dataclass(frozen=True, order=True)
class Change:
    doc_id: str
    kind: str
    old: str  # the stored hash (or quarantine reason), "" if none
    new: str  # the target hash (or quarantine reason), "" if the document is to go

    @property
    def partition(self) -> str:
        return partition_of(self.doc_id)


def diff(listing: Listing, committed: Committed) -> list[Change]:
    """Every document and quarantine row whose committed state differs from the inbox.

    Mirrors `sync_documents`: a quarantined file keeps the last good version of its
    documents, so those are compared with their stored hash rather than deleted.
    """
    changes: list[Change] = []
    for doc_id, seen in listing.docs.items():
        stored = committed.documents.get(doc_id)
        vectors = committed.embedded.get(doc_id, frozenset())
        if stored is None:
            changes.append(Change(doc_id, NEW, "", seen.content_hash))
        elif stored[1] != seen.content_hash:
            changes.append(Change(doc_id, CHANGED, stored[1], seen.content_hash))
        elif vectors != {seen.content_hash}:
            changes.append(Change(doc_id, PENDING, ",".join(sorted(vectors)), seen.content_hash))
    for doc_id in listing.as_stored:
        stored = committed.documents[doc_id]
        vectors = committed.embedded.get(doc_id, frozenset())
        if vectors != {stored[1]}:
            changes.append(Change(doc_id, PENDING, ",".join(sorted(vectors)), stored[1]))
    for doc_id in sorted(set(committed.documents) | set(committed.embedded)):
        if doc_id in listing.docs or doc_id in listing.as_stored:
            continue
        stored = committed.documents.get(doc_id)
        vectors = committed.embedded.get(doc_id, frozenset())
        if stored is not None and _is_protected(stored[0], listing.protected_uris):
            if vectors != {stored[1]}:
                changes.append(Change(doc_id, PENDING, ",".join(sorted(vectors)), stored[1]))
            continue
        old = stored[1] if stored else ",".join(sorted(vectors))
        changes.append(Change(doc_id, DELETED, old, ""))
    for qid, q in listing.quarantined.items():
        stored_q = committed.quarantine.get(qid)
        if stored_q is None or stored_q[1] != q.reason:
            changes.append(Change(q.doc_id, QUARANTINED, stored_q[1] if stored_q else "", q.reason))
    for qid, (doc_id, reason) in committed.quarantine.items():
        if qid not in listing.quarantined:
            changes.append(Change(doc_id, CLEARED, reason, ""))
    return sorted(changes)


def _is_protected(uri: str, protected: set[str]) -> bool:
    return uri in protected or uri.rsplit("#", 1)[0] in protected


def touched_partitions(changes: Iterable[Change]) -> list[str]:
    parts = {c.partition for c in changes}
    return [p for p in ALL_PARTITIONS if p in parts]


def change_key(changes: Sequence[Change], committed_version: str) -> str:
    """A run key from content: the changes (old and new hash of each document) and the
    committed version they were measured against.

    The same changes seen again before anything commits give the same key (Dagster starts
    one run per key). A file changed A -> B -> A -> B gives (A, B) twice, but the store's
    version has moved in between, so the second (A, B) is a new key and is ingested again.
    """
    h = hashlib.blake2b(digest_size=12)
    h.update(committed_version.encode())
    for c in changes:
        h.update(json.dumps([c.doc_id, c.kind, c.old, c.new]).encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def summarise(changes: Sequence[Change]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for c in changes:
        counts[c.kind] = counts.get(c.kind, 0) + 1
    return counts


# -- inputs that fail runs ------------------------------------------------------------
# A document that was pending in this many failed runs in a row (at the same content) is
# set aside: quarantined with the reason, left out of every run until its file changes.
INBOX_ATTEMPTS = 3
_SHORT = 16  # hex digits of the document key and content hash the cursor keeps


def _short(doc_id: str) -> str:
    return doc_key(doc_id)[:_SHORT]


@dataclass
class Attempts:
    """Failed inbox runs per pending document, kept in the sensor cursor (short keys).

    A failed run cannot say which input broke it (a worker killed for memory, a bug in a
    step, or the machine). A document becomes a suspect once it failed a run alone, or two
    runs: a run of many that fails once (the machine died) is simply retried whole. The
    next run takes the other changes without the suspects (a good file dropped after a
    poison one goes in at once), then each suspect runs alone; one that fails
    `INBOX_ATTEMPTS` runs is quarantined."""

    failures: dict[str, list] = field(default_factory=dict)  # short id -> [hash, n, error]
    last: dict = field(default_factory=dict)  # {"key": run key, "docs": {short id: hash}}

    @classmethod
    def from_cursor(cls, cursor: dict) -> Attempts:
        raw = cursor.get("attempts") or {}
        return cls(dict(raw.get("failures") or {}), dict(raw.get("last") or {}))

    def to_cursor(self) -> dict:
        return {"failures": self.failures, "last": self.last}

    def settle(self, outcome: str | None, error: str = "") -> None:
        """Record how the last requested run ended: "success", "failure", or None (not
        run yet: nothing to record)."""
        if outcome is None or not self.last:
            return
        docs = self.last.get("docs", {})
        for key, digest in docs.items():
            if outcome == "success":
                self.failures.pop(key, None)
                continue
            old = self.failures.get(key)
            n = old[1] + 1 if old and old[0] == digest else 1
            # Failed alone: the evidence points at it; else one failure may be the machine.
            alone = len(docs) == 1 or bool(old and old[0] == digest and old[3])
            self.failures[key] = [digest, n, error, alone]
        self.last = {}

    def plan(
        self, changes: list[Change], listing: Listing, committed: Committed
    ) -> tuple[list[Change], list[SetAside]]:
        """The changes the next run takes, and the documents it sets aside (every run is
        told them all, so none reads a set-aside file). Failures of documents no longer
        pending at that content are forgotten."""
        pending = {c.doc_id: c for c in changes if c.kind in (NEW, CHANGED, PENDING)}
        current = {_short(d): d for d in pending}
        self.failures = {
            k: v
            for k, v in self.failures.items()
            if k in current and pending[current[k]].new[:_SHORT] == v[0]
        }
        aside: list[SetAside] = []
        for key, (_digest, n, error, alone) in sorted(self.failures.items()):
            if n < 2 and not alone:
                continue  # one failure among many (a machine that died): all retried
            doc_id = current[key]
            seen = listing.docs.get(doc_id)
            reason = ""
            if n >= INBOX_ATTEMPTS:
                last = f" (last: {error})" if error else ""
                reason = (
                    f"set aside: {n} ingest runs failed with it pending{last}; "
                    "change or replace the file to try it again"
                )
            aside.append(SetAside(doc_id, pending[doc_id].new, seen.uri if seen else "", reason))
        held = {a.doc_id for a in aside}
        quarantined = {a.doc_id: a for a in aside if a.reason}
        chosen = [c for c in changes if c.doc_id not in held]
        suspects = [a for a in aside if not a.reason]
        if suspects and not any(c.kind in (NEW, CHANGED, PENDING) for c in chosen):
            # Nothing else to do: one suspect, alone.
            chosen.append(pending[suspects[0].doc_id])
            aside.remove(suspects[0])
        for doc_id, a in quarantined.items():
            stored = committed.quarantine.get(quarantine_id(Quarantined(doc_id, "", a.uri, "")))
            if stored != (doc_id, a.reason):
                chosen.append(Change(doc_id, QUARANTINED, stored[1] if stored else "", a.reason))
        self.last = {
            "docs": {
                _short(c.doc_id): c.new[:_SHORT]
                for c in chosen
                if c.kind in (NEW, CHANGED, PENDING)
            }
        }
        return sorted(chosen), aside

    def requested(self, run_key: str) -> None:
        self.last["key"] = run_key
