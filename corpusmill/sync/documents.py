"""sources -> `documents`: the corpus as last read, one row per document."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from corpusmill.errors import ConfigError, InputError
from corpusmill.ids import content_hash, doc_key, partition_of
from corpusmill.sources import Document, Quarantined, RecordFields, read_source
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


@dataclass
class DocumentsReport(Report):
    documents: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0
    quarantined: int = 0
    unavailable_sources: list[str] = field(default_factory=list)
    quarantine: list[Quarantined] = detail(list)


def sync_documents(
    store: Store,
    partitions: Sequence[str],
    sources: Sequence[tuple[str, str]],
    *,
    fields: RecordFields | None = None,
    max_file_bytes: int,
) -> DocumentsReport:
    """Make `documents` hold exactly what `sources` contain in `partitions`.

    `sources` are (spec, label) pairs. Rows of other sources are never touched. A source
    that cannot be listed (unmounted, missing) keeps its rows: absence of a whole source
    is far more often an accident than a deletion. A quarantined document keeps its last
    good version.
    """
    if max_file_bytes < 0:
        raise ConfigError(
            f"max_file_bytes={max_file_bytes} must be >= 0 (CORPUSMILL_MAX_FILE_BYTES)"
        )
    wanted_parts = set(partitions)
    report = DocumentsReport()
    docs: dict[str, Document] = {}
    protected: set[str] = set()
    labels: list[str] = []
    check_labels(sources)
    for spec, label in sources:
        try:
            for item in read_source(
                spec,
                lambda d: partition_of(d) in wanted_parts,
                label=label,
                fields=fields or RecordFields(),
                max_file_bytes=max_file_bytes,
            ):
                if isinstance(item, Document) and item.doc_id in docs:
                    # Ids cannot collide by construction (corpusmill.ids); if they ever
                    # did, the second document is quarantined, not silently dropped.
                    item = Quarantined(
                        item.doc_id,
                        item.source,
                        item.uri,
                        f"duplicate document id: {docs[item.doc_id].uri} has it too",
                    )
                if isinstance(item, Quarantined):
                    if partition_of(item.doc_id) in wanted_parts:
                        report.quarantine.append(item)
                    protected.add(item.uri)
                else:
                    docs[item.doc_id] = item
            labels.append(label)
        except FileNotFoundError:
            report.unavailable_sources.append(spec)
    report.documents = len(docs)
    report.quarantined = len(report.quarantine)
    if not sources:
        raise InputError("no sources to read: set CORPUSMILL_SOURCES or pass paths to ingest")
    if not labels:
        # Every source is missing: a run that reads nothing must not report success.
        raise InputError(
            f"no source could be read ({', '.join(report.unavailable_sources)} does not "
            "exist); check the paths (CORPUSMILL_SOURCES or the ingest arguments)"
        )

    in_sources = set(labels)
    stored = [
        r
        for r in store.scan(
            "documents", ["doc_id", "source", "uri", "content_hash"], partition_filter(partitions)
        ).to_pylist()
        if r["source"] in in_sources
    ]
    old = {r["doc_id"]: r["content_hash"] for r in stored}
    upserts = [d for d in docs.values() if old.get(d.doc_id) != d.content_hash]
    report.new = sum(1 for d in upserts if d.doc_id not in old)
    report.changed = len(upserts) - report.new
    report.unchanged = len(docs) - len(upserts)
    # A quarantined file (or a record of it) keeps its last good version.
    gone = [
        r["doc_id"]
        for r in stored
        if r["doc_id"] not in docs
        and r["uri"] not in protected
        and r["uri"].rsplit("#", 1)[0] not in protected
    ]
    report.deleted = len(gone)

    table = store.ensure("documents", documents_schema())
    for group in groups_of(upserts, DOC_GROUP * 4):
        rows = [
            {
                "doc_id": d.doc_id,
                "doc_key": doc_key(d.doc_id),
                "source": d.source,
                "uri": d.uri,
                "partition": partition_of(d.doc_id),
                "title": d.title,
                "text": d.text,
                "content_hash": d.content_hash,
            }
            for d in group
        ]
        store.replace_rows(table, "doc_id", rows_to_table(rows, documents_schema()), None)
    for group in groups_of(gone):
        store.replace_rows(table, "doc_id", None, docs_filter(group))
    record_quarantine(store, "source", report.quarantine, in_sources, partitions)
    return report


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
) -> None:
    """Replace this scope's quarantine rows with the current list (a fixed file leaves it).
    `sources=None` scopes it to every source (the embed stage does not know them)."""
    now = dt.datetime.now(dt.UTC)
    rows = [
        {
            "quarantine_id": content_hash(stage, q.doc_id, q.uri),
            "doc_id": q.doc_id,
            "source": q.source,
            "uri": q.uri,
            "partition": partition_of(q.doc_id),
            "stage": stage,
            "reason": q.reason,
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
        ["quarantine_id", "source"],
        all_of(partition_filter(partitions), eq_filter("stage", stage)),
    ).to_pylist()
    stale = [
        r["quarantine_id"]
        for r in existing
        if (sources is None or r["source"] in sources) and r["quarantine_id"] not in current
    ]
    if rows:
        store.replace_rows(table, "quarantine_id", rows_to_table(rows, quarantine_schema()), None)
    for group in groups_of(stale):
        store.replace_rows(table, "quarantine_id", None, in_filter("quarantine_id", group))
