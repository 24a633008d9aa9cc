"""sources -> `documents`: the corpus as last read, one row per document.

The sources are read as a stream and written as they come, in groups: what is held is one
compact entry per stored document (id, uri, hash, signature) and per document seen, never
the corpus's text, so a bucket of a million objects passes through a bounded window
(`DOC_GROUP * 4` documents). A rerun after a crash finds the groups already written
unchanged and writes the rest.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from corpusmill.errors import ConfigError, InputError
from corpusmill.ids import content_hash, display_name, doc_key, parse_doc_id, partition_of
from corpusmill.sources import (
    Document,
    Quarantined,
    ReadOptions,
    SetAside,
    Unchanged,
    read_source,
)
from corpusmill.store import (
    Store,
    all_of,
    documents_schema,
    eq_filter,
    groups_of,
    in_filter,
    quarantine_schema,
    rows_to_table,
)
from corpusmill.sync.scope import DOC_GROUP, Report, detail, docs_filter, partition_filter

WRITE_GROUP = DOC_GROUP * 4  # documents per commit of `documents`


@dataclass
class DocumentsReport(Report):
    documents: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    not_read: int = 0  # of the unchanged: objects whose signature said so, never fetched
    deleted: int = 0
    quarantined: int = 0
    unavailable_sources: list[str] = field(default_factory=list)
    quarantine: list[Quarantined] = detail(list)


@dataclass(frozen=True, slots=True)
class _Stored:
    uri: str
    content_hash: str
    signature: str


def sync_documents(
    store: Store,
    partitions: Sequence[str],
    sources: Sequence[tuple[str, str]],
    options: ReadOptions,
    set_aside: Sequence[SetAside] = (),
) -> DocumentsReport:
    """Make `documents` hold exactly what `sources` contain in `partitions`.

    `sources` are (spec, label) pairs; `options` says how to read them. Rows of other
    sources are never touched. A source that cannot be listed (unmounted, missing, a
    bucket that does not exist) keeps its rows: absence of a whole source is far more often
    an accident than a deletion. A quarantined document keeps its last good version. An
    object whose signature is the stored one is not read (`Unchanged`).

    `set_aside`: documents not to read (the inbox's inputs that failed its runs): a stored
    row at the set-aside content is removed (so no later stage takes it up), an older one
    stays; one with a reason is quarantined.
    """
    if options.max_file_bytes < 0:
        raise ConfigError(
            f"max_file_bytes={options.max_file_bytes} must be >= 0 (CORPUSMILL_MAX_FILE_BYTES)"
        )
    if not sources:
        raise InputError("no sources to read: set CORPUSMILL_SOURCES or pass paths to ingest")
    entries = file_identities(store, sources)
    check_labels([(spec, label) for spec, label, key in entries if key is None])
    # label -> the files that are all this run reads of it (a file given by its path).
    files: dict[str, set[str]] = {}
    for spec, label, key in entries:
        if key is not None:
            files.setdefault(label, set()).add(_file_uri(spec))
    wanted_parts = set(partitions)
    report = DocumentsReport()
    stored = _stored(store, partitions, {label for _, label, _ in entries})
    table = store.ensure("documents", documents_schema())
    seen: dict[str, str] = {}  # doc_id -> uri, of every document the sources hold now
    protected: set[str] = set()  # uris of quarantined files: their rows stay
    pending: list[Document] = []
    labels: list[str] = []

    def flush() -> None:
        if pending:
            rows = rows_to_table([_row(d) for d in pending], documents_schema())
            store.replace_rows(table, "doc_id", rows, None)
            pending.clear()

    aside = {a.doc_id: a for a in set_aside}
    for a in set_aside:
        if a.reason and partition_of(a.doc_id) in wanted_parts:
            report.quarantine.append(
                Quarantined(a.doc_id, parse_doc_id(a.doc_id)[0], a.uri, a.reason)
            )
    for spec, label, key in entries:
        known = {d: r.signature for d, r in stored.get(label, {}).items() if r.signature}
        items = read_source(
            spec,
            lambda d: partition_of(d) in wanted_parts and d not in aside,
            label=label,
            options=options,
            known=known,
            key=key,
        )
        try:
            for item in items:
                if isinstance(item, Unchanged):
                    seen[item.doc_id] = item.uri
                    report.unchanged += 1
                    report.not_read += 1
                    continue
                if isinstance(item, Document) and item.doc_id in seen:
                    # Ids cannot collide by construction (corpusmill.ids); if they ever
                    # did, the second document is quarantined, not silently dropped.
                    item = Quarantined(
                        item.doc_id,
                        item.source,
                        item.uri,
                        f"duplicate document id: {seen[item.doc_id]} has it too",
                    )
                if isinstance(item, Quarantined):
                    if partition_of(item.doc_id) in wanted_parts:
                        report.quarantine.append(item)
                    protected.add(item.uri)
                    continue
                seen[item.doc_id] = item.uri
                old = stored.get(label, {}).get(item.doc_id)
                if old is None:
                    report.new += 1
                elif old.content_hash != item.content_hash:
                    report.changed += 1
                else:
                    report.unchanged += 1
                    if old.signature == item.signature:
                        continue  # as stored: nothing to write
                    # Same content from other bytes (an object re-uploaded): the row
                    # takes the new signature, so the next run need not read it.
                pending.append(item)
                if len(pending) >= WRITE_GROUP:
                    flush()
            labels.append(label)
        except FileNotFoundError:
            report.unavailable_sources.append(spec)
    flush()
    report.documents = len(seen)
    report.quarantined = len(report.quarantine)
    if not labels:
        # Every source is missing: a run that reads nothing must not report success.
        raise InputError(
            f"no source could be read ({', '.join(report.unavailable_sources)} does not "
            "exist); check the paths (CORPUSMILL_SOURCES or the ingest arguments)"
        )

    # A quarantined file (or a record of it) keeps its last good version. Of a label
    # read through single files only, only those files' rows are in question.
    def goes(label: str, doc_id: str, row: _Stored) -> bool:
        if doc_id in seen:
            return False
        if doc_id in aside:  # the set-aside content goes; an older version stays
            return aside[doc_id].content_hash == row.content_hash
        if row.uri in protected or row.uri.rsplit("#", 1)[0] in protected:
            return False
        return label not in files or _file_of(doc_id, row.uri) in files[label]

    gone = [
        doc_id
        for label in labels
        for doc_id, row in stored.get(label, {}).items()
        if goes(label, doc_id, row)
    ]
    gone += same_files(store, partitions, seen, set(gone))
    report.deleted = len(gone)
    for group in groups_of(sorted(gone)):
        store.replace_rows(table, "doc_id", None, docs_filter(group))
    record_quarantine(store, "source", report.quarantine, set(labels), partitions, files=files)
    return report


def _file_uri(spec: str) -> str:
    """The `uri` a file's rows carry (`sources.read_path`: the absolute path)."""
    return os.path.abspath(os.path.expanduser(spec))


def _file_of(doc_id: str, uri: str) -> str:
    """The file a document's `uri` names: a record's (an id of three parts) is the file's
    plus `#record` (the record id escaped, so no `#` of its own); a file's is its path, `#`
    and all."""
    return uri.rsplit("#", 1)[0] if doc_id.count("#") == 2 else uri


def _in_files(uri: str, files: set[str]) -> bool:
    """A quarantine row's `uri` is of one of `files` (a bad record's is `file#id` or
    `file:line`)."""
    return any(uri == f or uri.startswith((f + "#", f + ":")) for f in files)


def file_identities(
    store: Store, sources: Sequence[tuple[str, str]]
) -> list[tuple[str, str, str | None]]:
    """(spec, label, key) per source: `key` None for a folder, pydoc or prefix; for one file
    given by its path, the label and key that make it the same document however it is
    reached (issue 27): those its rows already carry if the store holds it (ingested
    through a folder, or alone before), else its folder's label and its name, as its
    folder's ingest would name it. A file with a label of its own (`LABEL=PATH`) keeps it.
    A file inside a folder read in the same run under the same label is left to the folder.
    """
    from corpusmill.ids import parse_doc_id
    from corpusmill.sources import PYDOC, source_label

    held: dict[str, str] | None = None  # file uri -> a doc id of it, read once if needed
    out: list[tuple[str, str, str | None]] = []
    for spec, label in sources:
        if spec == PYDOC or "://" in spec or not os.path.isfile(spec):
            out.append((spec, label, None))
            continue
        uri = _file_uri(spec)
        if label != source_label(spec):  # LABEL=PATH: the user named it
            out.append((spec, label, Path(uri).name))
            continue
        if held is None:
            rows = store.scan("documents", ["doc_id", "uri"]).to_pylist()
            held = {_file_of(r["doc_id"], r["uri"]): r["doc_id"] for r in rows if r["uri"]}
        if uri in held:
            label, key, _record = parse_doc_id(held[uri])
        else:
            label, key = source_label(str(Path(uri).parent)), Path(uri).name
        out.append((spec, label, key))
    folders = {label for _spec, label, key in out if key is None}
    return [e for e in out if e[2] is None or e[1] not in folders]


def same_files(
    store: Store, partitions: Sequence[str], seen: dict[str, str], gone: set[str]
) -> list[str]:
    """Documents of `partitions` stored under another id for a file read now (`seen`: doc
    id -> uri): one file is one document, so the other ids leave (a file ingested alone
    by an older corpusmill, then through its folder)."""
    uris = {_file_of(d, u) for d, u in seen.items()}
    rows = store.scan("documents", ["doc_id", "uri"], partition_filter(partitions)).to_pylist()
    return sorted(
        r["doc_id"]
        for r in rows
        if r["doc_id"] not in seen
        and r["doc_id"] not in gone
        and _file_of(r["doc_id"], r["uri"] or "") in uris
        and not (r["uri"] or "").startswith(("pydoc:", "s3://"))
    )


def _stored(store: Store, partitions: Sequence[str], labels: set[str]) -> dict[str, dict]:
    """label -> {doc_id: what its row says}, for the sources' rows in `partitions`."""
    table = store.open("documents")
    columns = ["doc_id", "source", "uri", "content_hash"]
    if table is not None and "signature" in table.schema.names:
        columns.append("signature")
    rows = store.scan("documents", columns, partition_filter(partitions))
    out: dict[str, dict[str, _Stored]] = {label: {} for label in labels}
    if not rows.num_rows:
        return out
    values = [rows[c].to_pylist() for c in columns]
    if len(columns) == 4:
        values.append([None] * rows.num_rows)
    for doc_id, source, uri, digest, sig in zip(*values, strict=True):
        if source in out:
            out[source][doc_id] = _Stored(uri, digest, sig or "")
    return out


def _row(d: Document) -> dict:
    return {
        "doc_id": d.doc_id,
        "doc_key": doc_key(d.doc_id),
        "source": d.source,
        "uri": d.uri,
        "partition": partition_of(d.doc_id),
        "title": d.title,
        "text": d.text,
        "content_hash": d.content_hash,
        "author": d.author,
        "structure": d.structure.to_json() if d.structure.pages or d.structure.sections else None,
        "signature": d.signature or None,
    }


def check_labels(sources: Sequence[tuple[str, str]]) -> None:
    """Two different sources under one label would share ids: refuse, name both."""
    seen: dict[str, str] = {}
    for spec, label in sources:
        other = seen.setdefault(label, spec)
        if other != spec:
            raise ConfigError(
                f"sources {other!r} and {spec!r} share the label {label!r}; "
                "give each its own (LABEL=PATH in CORPUSMILL_SOURCES or the ingest paths)"
            )


def record_quarantine(
    store: Store,
    stage: str,
    items: Iterable[Quarantined],
    sources: set[str] | None,
    partitions: Sequence[str],
    *,
    files: dict[str, set[str]] | None = None,
) -> None:
    """Replace this scope's quarantine rows with the current list (a fixed file leaves it).
    `sources=None` scopes it to every source (the embed stage does not know them); `files`
    (label -> file uris) narrows a label to those files' rows."""
    now = dt.datetime.now(dt.UTC)
    rows = [
        {
            "quarantine_id": content_hash(stage, q.doc_id, q.uri),
            "doc_id": q.doc_id,
            "source": q.source,
            "uri": display_name(q.uri),
            "partition": partition_of(q.doc_id),
            "stage": stage,
            "reason": display_name(q.reason),  # it may quote a path
            "seen_at": now,
        }
        for q in items
    ]
    in_scope = set(partitions)
    rows = [r for r in rows if r["partition"] in in_scope]
    table = store.ensure("quarantine", quarantine_schema())
    current = {r["quarantine_id"] for r in rows}
    existing = store.scan(
        "quarantine",
        ["quarantine_id", "source", "uri"],
        all_of(partition_filter(partitions), eq_filter("stage", stage)),
    ).to_pylist()
    stale = [
        r["quarantine_id"]
        for r in existing
        if (sources is None or r["source"] in sources)
        and r["quarantine_id"] not in current
        and (not files or r["source"] not in files or _in_files(r["uri"], files[r["source"]]))
    ]
    if rows:
        store.replace_rows(table, "quarantine_id", rows_to_table(rows, quarantine_schema()), None)
    for group in groups_of(stale):
        store.replace_rows(table, "quarantine_id", None, in_filter("quarantine_id", group))
