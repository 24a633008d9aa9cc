"""The three sync steps behind the assets: sources -> documents -> chunks -> embeddings.

Each step makes its table mirror the one upstream for a set of partitions, touching only
what differs: a document whose content hash is unchanged is not re-chunked, a chunk whose
content hash is already stored is not re-embedded. Each step is idempotent, so a rerun
after a crash finishes the job and a rerun with nothing changed writes nothing.
No Dagster here: the assets call these functions and report what they return.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from corpusmill.chunking import TokenChunker
from corpusmill.ids import content_hash, doc_key, partition_of
from corpusmill.sources import Document, Quarantined, RecordFields, document_body, read_source
from corpusmill.store import (
    Store,
    all_of,
    chunks_schema,
    documents_schema,
    eq_filter,
    groups_of,
    in_filter,
    quarantine_schema,
    rows_to_table,
)

DOC_GROUP = 256  # documents per commit: a commit is atomic per document


@dataclass
class Report:
    def as_metadata(self) -> dict:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}


@dataclass
class DocumentsReport(Report):
    documents: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0
    quarantined: int = 0
    unavailable_sources: list[str] = field(default_factory=list)
    _quarantine: list[Quarantined] = field(default_factory=list)


def _partition_filter(partitions: Sequence[str]) -> str:
    return in_filter("partition", partitions)


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
    wanted_parts = set(partitions)
    report = DocumentsReport()
    docs: dict[str, Document] = {}
    protected: set[str] = set()
    labels: list[str] = []
    for spec, label in sources:
        try:
            for item in read_source(
                spec,
                lambda d: partition_of(d) in wanted_parts,
                label=label,
                fields=fields or RecordFields(),
                max_file_bytes=max_file_bytes,
            ):
                if isinstance(item, Quarantined):
                    if partition_of(item.doc_id) in wanted_parts:
                        report._quarantine.append(item)
                    protected.add(item.uri)
                else:
                    docs[item.doc_id] = item
            labels.append(label)
        except FileNotFoundError:
            report.unavailable_sources.append(spec)
    report.documents = len(docs)
    report.quarantined = len(report._quarantine)
    if not labels:
        return report

    in_sources = set(labels)
    stored = [
        r
        for r in store.scan(
            "documents", ["doc_id", "source", "uri", "content_hash"], _partition_filter(partitions)
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
        store.replace_rows(table, "doc_id", None, _docs_filter(group))
    _record_quarantine(store, "source", report._quarantine, in_sources, partitions)
    return report


def _docs_filter(doc_ids: Iterable[str]) -> str:
    return in_filter("doc_key", [doc_key(d) for d in doc_ids])


def _record_quarantine(
    store: Store,
    stage: str,
    items: Iterable[Quarantined],
    sources: set[str],
    partitions: Sequence[str],
) -> None:
    """Replace this scope's quarantine rows with the current list (a fixed file leaves it)."""
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
        all_of(_partition_filter(partitions), eq_filter("stage", stage)),
    ).to_pylist()
    stale = [
        r["quarantine_id"]
        for r in existing
        if r["source"] in sources and r["quarantine_id"] not in current
    ]
    if rows:
        store.replace_rows(table, "quarantine_id", rows_to_table(rows, quarantine_schema()), None)
    for group in groups_of(stale):
        store.replace_rows(table, "quarantine_id", None, in_filter("quarantine_id", group))


# -- chunks ---------------------------------------------------------------------------
@dataclass
class ChunksReport(Report):
    documents_chunked: int = 0
    documents_removed: int = 0
    chunks_written: int = 0
    chunks_total: int = 0
    tokens_total: int = 0
    truncated: int = 0
    chunker: str = ""


def sync_chunks(store: Store, chunker: TokenChunker, partitions: Sequence[str]) -> ChunksReport:
    """Re-chunk documents whose hash (or the chunker version) changed; drop removed ones."""
    report = ChunksReport(chunker=chunker.version)
    pf = _partition_filter(partitions)
    docs = store.scan("documents", ["doc_id", "content_hash"], pf)
    want = dict(zip(docs["doc_id"].to_pylist(), docs["content_hash"].to_pylist(), strict=True))
    have_rows = store.scan("chunks", ["doc_id", "doc_hash", "chunker"], pf)
    have: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for d, h, c in zip(
        *(have_rows[k].to_pylist() for k in ("doc_id", "doc_hash", "chunker")), strict=True
    ):
        have[d].add((h, c))
    todo = sorted(d for d, h in want.items() if have.get(d) != {(h, chunker.version)})
    gone = sorted(d for d in have if d not in want)
    table = store.ensure("chunks", chunks_schema())
    for group in groups_of(todo, DOC_GROUP):
        full = store.scan_in(
            "documents",
            ["doc_id", "source", "uri", "partition", "title", "text", "content_hash"],
            "doc_key",
            [doc_key(d) for d in group],
        ).to_pylist()
        bodies = [(r["doc_id"], document_body(r["title"], r["text"])) for r in full]
        result = chunker.chunk_documents(bodies)
        by_doc = {r["doc_id"]: r for r in full}
        rows = [
            {
                "chunk_id": c.chunk_id,
                "doc_id": c.doc_id,
                "doc_key": doc_key(c.doc_id),
                "source": by_doc[c.doc_id]["source"],
                "uri": by_doc[c.doc_id]["uri"],
                "partition": by_doc[c.doc_id]["partition"],
                "position": c.position,
                "text": c.text,
                "content_hash": c.content_hash,
                "doc_hash": by_doc[c.doc_id]["content_hash"],
                "n_tokens": c.n_tokens,
                "chunker": chunker.version,
            }
            for c in result.chunks
        ]
        report.truncated += result.truncated
        report.chunks_written += len(rows)
        report.documents_chunked += len(group)
        store.replace_rows(
            table, "chunk_id", rows_to_table(rows, chunks_schema()), _docs_filter(group)
        )
    for group in groups_of(gone):
        store.replace_rows(table, "chunk_id", None, _docs_filter(group))
    report.documents_removed = len(gone)
    totals = store.scan("chunks", ["n_tokens"], pf)
    report.chunks_total = totals.num_rows
    report.tokens_total = (
        int(pa.compute.sum(totals["n_tokens"]).as_py() or 0) if totals.num_rows else 0
    )
    return report


# -- embeddings -------------------------------------------------------------------------
@dataclass
class EmbeddingsReport(Report):
    rows: int = 0
    documents_updated: int = 0
    documents_removed: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    chunks_failed: int = 0
    sync_seconds: float = 0.0
    _failed: list[Quarantined] = field(default_factory=list)


_CHUNK_COLUMNS = [f.name for f in chunks_schema()]


def sync_embeddings(
    store: Store,
    embed: Callable[[Iterable[tuple[str, str]], Callable], object],
    card,
    partitions: Sequence[str],
) -> EmbeddingsReport:
    """Make `embeddings` mirror `chunks` for `partitions`, embedding only new content.

    `embed(items, sink)` streams (key, text) items through the engine and calls
    `sink(items, rows, failed)` per window; the model resource provides it.
    """
    t0 = time.perf_counter()
    report = EmbeddingsReport()
    table = store.ensure_embeddings(card)
    pf = _partition_filter(partitions)
    want = store.scan("chunks", ["chunk_id", "doc_id", "content_hash"], pf)
    have = store.scan("embeddings", ["chunk_id", "doc_id", "content_hash"], pf)
    want_by_doc: dict[str, set[tuple[str, str]]] = defaultdict(set)
    have_by_doc: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for c, d, h in zip(
        *(want[k].to_pylist() for k in ("chunk_id", "doc_id", "content_hash")), strict=True
    ):
        want_by_doc[d].add((c, h))
    for c, d, h in zip(
        *(have[k].to_pylist() for k in ("chunk_id", "doc_id", "content_hash")), strict=True
    ):
        have_by_doc[d].add((c, h))
    stale = sorted(d for d in want_by_doc if want_by_doc[d] != have_by_doc.get(d))
    gone = sorted(d for d in have_by_doc if d not in want_by_doc)
    report.documents_updated = len(stale)
    report.documents_removed = len(gone)

    for group in groups_of(gone):
        store.replace_rows(table, "chunk_id", None, _docs_filter(group))

    committer = _GroupCommitter(store, table, card, report)
    pending: list[tuple[str, str]] = []  # (chunk_id, text) to embed, in group order
    for group in groups_of(stale, DOC_GROUP):
        rows = store.scan_in(
            "chunks", _CHUNK_COLUMNS, "doc_key", [doc_key(d) for d in group]
        ).to_pylist()
        vectors = _reusable_vectors(store, {r["content_hash"] for r in rows})
        todo = committer.add_group(list(group), rows, vectors)
        pending.extend(todo)
    if pending:
        embed(pending, committer.sink)
    committer.flush_all()
    # Reused = every wanted chunk whose vector was already stored (unchanged or same content).
    report.chunks_reused = want.num_rows - report.chunks_embedded - report.chunks_failed
    report.rows = store.count("embeddings", pf)
    report.sync_seconds = round(time.perf_counter() - t0, 3)
    return report


def _reusable_vectors(store: Store, hashes: set[str]) -> dict[str, list[float]]:
    """Vectors already stored for these chunk contents, wherever they are in the table."""
    found = store.scan_in("embeddings", ["content_hash", "vector"], "content_hash", sorted(hashes))
    return dict(zip(found["content_hash"].to_pylist(), found["vector"].to_pylist(), strict=True))


class _GroupCommitter:
    """Collects vectors per document group and commits a group once all of it is ready.

    Items are fed to the engine in group order, so when a window finishes every group
    before the last one it touched is complete.
    """

    def __init__(self, store: Store, table, card, report: EmbeddingsReport) -> None:
        self.store, self.table, self.card, self.report = store, table, card, report
        self.groups: list[dict] = []  # {docs, rows, missing:set(chunk_id)}
        self.vectors: dict[str, list[float] | None] = {}
        self.owner: dict[str, int] = {}

    def add_group(self, docs: list[str], rows: list[dict], reused: dict[str, list[float]]):
        gid = len(self.groups)
        missing = set()
        todo = []
        for r in rows:
            vec = reused.get(r["content_hash"])
            if vec is not None:
                self.vectors[r["chunk_id"]] = vec
            else:
                missing.add(r["chunk_id"])
                self.owner[r["chunk_id"]] = gid
                todo.append((r["chunk_id"], r["text"]))
        self.groups.append({"docs": docs, "rows": rows, "missing": missing, "done": False})
        if not missing:
            self._commit(gid)
        return todo

    def sink(self, items: list[tuple[str, str]], rows: np.ndarray, failed: dict[int, str]) -> None:
        touched = set()
        for i, (cid, _text) in enumerate(items):
            gid = self.owner[cid]
            touched.add(gid)
            if i in failed:
                self.vectors[cid] = None
                self.report._failed.append(Quarantined(cid, "", "", failed[i]))
            else:
                self.vectors[cid] = rows[i].tolist()
                self.report.chunks_embedded += 1
            self.groups[gid]["missing"].discard(cid)
        for gid in sorted(touched):
            if not self.groups[gid]["missing"]:
                self._commit(gid)

    def flush_all(self) -> None:
        for gid, g in enumerate(self.groups):
            if not g["done"]:
                if g["missing"]:
                    raise RuntimeError(f"engine returned no result for {len(g['missing'])} chunks")
                self._commit(gid)

    def _commit(self, gid: int) -> None:
        g = self.groups[gid]
        if g["done"]:
            return
        out = []
        for r in g["rows"]:
            vec = self.vectors.pop(r["chunk_id"], None)
            if vec is None:  # failed in the engine: stays out of the table, is quarantined
                self.report.chunks_failed += 1
                continue
            out.append({**r, "vector": vec, "model_id": self.card.model_id})
        table = (
            pa.Table.from_pylist(out, schema=self.table.schema.remove_metadata()) if out else None
        )
        self.store.replace_rows(self.table, "chunk_id", table, _docs_filter(g["docs"]))
        g["done"] = True
        g["rows"] = []
