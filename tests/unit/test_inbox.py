"""Inbox change detection (corpusmill.inbox): listing, stat cache, diff, run keys."""

from __future__ import annotations

import json
import os
from pathlib import Path

from corpusmill.inbox import (
    CHANGED,
    CLEARED,
    DELETED,
    NEW,
    PENDING,
    QUARANTINED,
    Change,
    Committed,
    StatCache,
    change_key,
    diff,
    quarantine_id,
    scan_inbox,
    touched_partitions,
)
from corpusmill.sources import Quarantined, ReadOptions, check_path

LIMIT = 1000


def _scan(root, cache=None):
    return scan_inbox(root, ReadOptions(max_file_bytes=LIMIT), cache=cache)


def test_listing_ids_hashes_and_record_files(tmp_path):
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("beta")
    (tmp_path / "recs.jsonl").write_text(json.dumps({"_id": "r1", "text": "record one"}) + "\n")
    (tmp_path / ".hidden.txt").write_text("never listed")
    (tmp_path / "c.txt.part").write_text("still downloading")
    listing = _scan(tmp_path)
    assert set(listing.docs) == {"inbox#a.txt", "inbox#sub/b.md", "inbox#recs.jsonl#r1"}
    assert listing.files == 3 and not listing.quarantined
    assert _scan(tmp_path).docs == listing.docs, "hashes are deterministic"


def test_missing_inbox_is_empty(tmp_path):
    listing = _scan(tmp_path / "nope")
    assert listing.files == 0 and not listing.docs


def test_stat_cache_rereads_only_what_moved_and_decides_by_content(tmp_path):
    files = [tmp_path / f"f{i}.txt" for i in range(5)]
    for i, f in enumerate(files):
        f.write_text(f"text {i}")
    cache = StatCache()
    first = _scan(tmp_path, cache)
    assert first.files_read == 5
    again = _scan(tmp_path, cache)
    assert again.files_read == 0 and again.docs == first.docs

    # Same size, mtime put back: the ctime still moves, so the new content is seen.
    st = files[0].stat()
    files[0].write_text("TEXT 0")
    os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns))
    # Touched only: re-read, but the hash is unchanged.
    os.utime(files[1], ns=(st.st_atime_ns + 10**9, st.st_mtime_ns + 10**9))
    third = _scan(tmp_path, cache)
    assert third.files_read == 2
    assert third.docs["inbox#f0.txt"].content_hash != first.docs["inbox#f0.txt"].content_hash
    assert third.docs["inbox#f1.txt"] == first.docs["inbox#f1.txt"]

    files[2].unlink()
    assert "inbox#f2.txt" not in _scan(tmp_path, cache).docs
    assert len(cache) == 4, "deleted files leave the cache"


def test_bad_input_is_quarantined_and_never_escapes(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    outside = tmp_path / "secret.txt"
    outside.write_text("outside the inbox")
    (inbox / "ok.txt").write_text("fine")
    (inbox / "bin.txt").write_bytes(b"abc\x00def")
    (inbox / "latin.txt").write_bytes(b"caf\xe9")
    (inbox / "empty.md").write_text("")
    (inbox / "blank.txt").write_text(" \n\t ")
    (inbox / "big.txt").write_text("x" * (LIMIT + 1))
    (inbox / "escape.txt").symlink_to(outside)
    (inbox / "gone.txt").symlink_to(inbox / "was-here.txt")  # removed before it was read
    (inbox / "inside.txt").symlink_to(inbox / "ok.txt")  # links inside the inbox are fine
    listing = _scan(inbox)
    reasons = {Path(q.uri).name: q.reason for q in listing.quarantined.values()}
    assert set(listing.docs) == {"inbox#ok.txt", "inbox#inside.txt"}
    assert "NUL" in reasons["bin.txt"]
    assert "UTF-8" in reasons["latin.txt"]
    assert "empty" in reasons["empty.md"] and "empty" in reasons["blank.txt"]
    assert "CORPUSMILL_MAX_FILE_BYTES" in reasons["big.txt"]
    assert "outside" in reasons["escape.txt"]
    assert "removed" in reasons["gone.txt"]
    assert check_path(inbox / ".." / "secret.txt", inbox) == "path contains '..'"


def test_transient_failures_are_not_cached(tmp_path):
    (tmp_path / "gone.txt").symlink_to(tmp_path / "later.txt")
    cache = StatCache()
    assert _scan(tmp_path, cache).quarantined
    (tmp_path / "later.txt").write_text("arrived")
    listing = _scan(tmp_path, cache)
    assert "inbox#gone.txt" in listing.docs and not listing.quarantined


# -- diff -----------------------------------------------------------------------------
def _listing(tmp_path, files: dict[str, str]):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return _scan(tmp_path)


def test_diff_kinds(tmp_path):
    listing = _listing(
        tmp_path,
        {"same.txt": "same", "new.txt": "new", "edit.txt": "v2", "half.txt": "h", "bad.txt": ""},
    )
    h = {d: s.content_hash for d, s in listing.docs.items()}
    bad_q = next(iter(listing.quarantined.values()))
    committed = Committed(
        documents={
            "inbox#same.txt": ("u", h["inbox#same.txt"]),
            "inbox#edit.txt": ("u", "old-hash"),
            "inbox#half.txt": ("u", h["inbox#half.txt"]),
            "inbox#gone.txt": ("u", "g"),
            # a quarantined file keeps its last good version: not a deletion
            "inbox#bad.txt": (bad_q.uri, "good-old"),
        },
        embedded={
            "inbox#same.txt": frozenset({h["inbox#same.txt"]}),
            "inbox#edit.txt": frozenset({"old-hash"}),
            "inbox#gone.txt": frozenset({"g"}),
            "inbox#bad.txt": frozenset({"good-old"}),
            "inbox#half.txt": frozenset({"stale"}),  # a run died before its vectors committed
            "inbox#orphan.txt": frozenset({"o"}),  # document row gone, vectors not yet
        },
        quarantine={"stale-qid": ("inbox#fixed.txt", "binary file")},
    )
    kinds = {(c.doc_id, c.kind) for c in diff(listing, committed)}
    assert kinds == {
        ("inbox#new.txt", NEW),
        ("inbox#edit.txt", CHANGED),
        ("inbox#half.txt", PENDING),
        ("inbox#gone.txt", DELETED),
        ("inbox#orphan.txt", DELETED),
        ("inbox#bad.txt", QUARANTINED),
        ("inbox#fixed.txt", CLEARED),
    }
    # Once everything is committed, nothing is left to do.
    done = Committed(
        documents={d: (s.uri, s.content_hash) for d, s in listing.docs.items()},
        embedded={d: frozenset({s.content_hash}) for d, s in listing.docs.items()},
        quarantine={quarantine_id(bad_q): (bad_q.doc_id, bad_q.reason)},
    )
    assert diff(listing, done) == []


def test_quarantine_reason_change_is_a_change(tmp_path):
    listing = _listing(tmp_path, {"x.txt": ""})
    q: Quarantined = next(iter(listing.quarantined.values()))
    committed = Committed(quarantine={quarantine_id(q): (q.doc_id, "some older reason")})
    assert [c.kind for c in diff(listing, committed)] == [QUARANTINED]


def test_change_key_from_content_and_committed_version():
    a_to_b = [Change("inbox#f", CHANGED, "A", "B")]
    b_to_a = [Change("inbox#f", CHANGED, "B", "A")]
    assert change_key(a_to_b, "1.1.1") == change_key(list(a_to_b), "1.1.1"), "seen twice, one key"
    assert change_key(a_to_b, "1.1.1") != change_key(b_to_a, "2.2.1")
    # A -> B again later: same change, but the store moved on, so it is ingested again.
    assert change_key(a_to_b, "1.1.1") != change_key(a_to_b, "3.3.1")
    assert change_key(a_to_b + [Change("inbox#g", NEW, "", "C")], "1.1.1") != change_key(
        a_to_b, "1.1.1"
    )


def test_touched_partitions_in_shard_order():
    from corpusmill.ids import ALL_PARTITIONS, partition_of

    changes = [Change(f"inbox#f{i}.txt", NEW, "", "h") for i in range(40)]
    parts = touched_partitions(changes)
    assert parts == sorted(parts, key=ALL_PARTITIONS.index)
    assert set(parts) == {partition_of(c.doc_id) for c in changes}
