"""`documents` -> `chunks`: re-chunk only documents whose content or chunker changed.

Each chunk is placed on its document's layout as it is cut: the pages its span covers and
the headings in force where it starts (`sources.locate`), so a hit can cite "page 12". A
document's layout is part of its content hash, so a document whose layout changed is
re-chunked here even when its text did not.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from corpusmill.chunking import Chunk, TokenChunker
from corpusmill.engine.progress import ProgressCallback, ProgressMeter
from corpusmill.ids import doc_key
from corpusmill.sources import Structure, body_offset, document_body, locate
from corpusmill.store import Store, chunks_schema, groups_of, rows_to_table
from corpusmill.sync.scope import DOC_GROUP, Report, docs_filter, partition_filter


@dataclass
class ChunksReport(Report):
    documents_chunked: int = 0
    documents_copied: int = 0  # of the documents chunked: taken from another generation
    documents_removed: int = 0
    chunks_written: int = 0
    chunks_total: int = 0
    tokens_total: int = 0
    truncated: int = 0
    chunker: str = ""


def sync_chunks(
    store: Store,
    chunker: TokenChunker,
    partitions: Sequence[str],
    donors: Sequence[Store] = (),
    progress: ProgressCallback | None = None,
) -> ChunksReport:
    """Re-chunk documents whose hash (or the chunker version) changed; drop removed ones.

    `donors`: other generations' views whose model has this chunker's tokenizer (a new
    revision or a fine-tune of the same base): a document they hold at its current hash,
    cut by the same chunker version and tokenizer, has exactly the chunks this step would
    cut (ids, text, token ids), so they are copied instead of tokenised again.

    `progress` hears how far the chunking of each document longer than the chunker's
    window (`TokenChunker.window_chars`) got: characters chunked of its length."""
    report = ChunksReport(chunker=chunker.version)
    pf = partition_filter(partitions)
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
    columns = ["doc_id", "source", "uri", "partition", "title", "text", "content_hash"]
    doc_table = store.open("documents")
    # A documents table from before layouts were stored lacks the column until it is next
    # synced: its documents have none.
    if doc_table is not None and "structure" in doc_table.schema.names:
        columns.append("structure")
    for group in groups_of(todo, DOC_GROUP):
        copied = _copied(donors, group, want, chunker)
        full = store.scan_in(
            "documents", columns, "doc_key", [doc_key(d) for d in group if d not in copied]
        ).to_pylist()
        by_doc = {r["doc_id"]: r for r in full}
        layouts = {d: Structure.from_json(r.get("structure") or "") for d, r in by_doc.items()}
        shifts = {d: body_offset(r["title"], r["text"]) for d, r in by_doc.items()}
        bodies = ((r["doc_id"], document_body(r["title"], r["text"])) for r in full)
        # Each batch's rows become Arrow at once: a huge document's chunks are held as
        # columns (its text once more, 4 bytes a token), never as Python rows.
        parts: list[pa.Table] = []
        truncated = 0
        for batch in chunker.batches(bodies, _doc_progress(progress, by_doc)):
            truncated += batch.truncated
            rows = [
                {
                    **place(c, by_doc[c.doc_id], layouts[c.doc_id], shifts[c.doc_id]),
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
                    "input_ids": c.input_ids,
                    "tokenizer": chunker.tokenizer_id if c.input_ids is not None else None,
                }
                for c in batch.chunks
            ]
            parts.append(rows_to_table(rows, chunks_schema()))
        donated = [row for rows in copied.values() for row in rows]
        parts.append(rows_to_table(donated, chunks_schema()))
        del full, by_doc
        table_rows = pa.concat_tables(parts)
        del parts
        report.documents_copied += len(copied)
        report.truncated += truncated
        report.chunks_written += table_rows.num_rows
        report.documents_chunked += len(group)
        store.replace_rows(table, "chunk_id", table_rows, docs_filter(group))
        del table_rows
    for group in groups_of(gone):
        store.replace_rows(table, "chunk_id", None, docs_filter(group))
    report.documents_removed = len(gone)
    totals = store.scan("chunks", ["n_tokens"], pf)
    report.chunks_total = totals.num_rows
    report.tokens_total = (
        int(pa.compute.sum(totals["n_tokens"]).as_py() or 0) if totals.num_rows else 0
    )
    return report


def _doc_progress(progress: ProgressCallback | None, docs: dict[str, dict]):
    """The chunker's per-window reports of a long document as `Progress` snapshots (one
    meter per document, at the meter's rhythm, and always once at its end)."""
    if progress is None:
        return None
    meters: dict[str, ProgressMeter] = {}

    def heard(doc_id: str, done: int, total: int, tokens: int) -> None:
        meter = meters.get(doc_id)
        if meter is None:
            unit = f"characters of {docs[doc_id]['uri']}"
            meter = meters[doc_id] = ProgressMeter(progress, total, step="chunked", unit=unit)
        if done > meter.done:
            meter.advance(done - meter.done, tokens - meter.tokens)
        if done >= total:
            meters.pop(doc_id).finish()

    return heard


def _copied(
    donors: Sequence[Store], docs: Sequence[str], want: dict[str, str], chunker: TokenChunker
) -> dict[str, list[dict]]:
    """doc_id -> its chunk rows from the first donor that holds it at its current hash, cut
    by this chunker version with this tokenizer (every row: a document's chunks are
    committed together)."""
    found: dict[str, list[dict]] = {}
    if not chunker.tokenizer_id:
        return found
    for donor in donors:
        left = [d for d in docs if d not in found]
        held = donor.open("chunks")
        if not left or held is None:
            continue
        # A donor's table from before a column was added lacks it: its rows carry null there.
        columns = [f.name for f in chunks_schema() if f.name in held.schema.names]
        rows = donor.scan_in("chunks", columns, "doc_key", [doc_key(d) for d in left])
        by_doc: dict[str, list[dict]] = defaultdict(list)
        for row in rows.to_pylist():
            by_doc[row["doc_id"]].append(row)
        for doc, doc_rows in by_doc.items():
            if all(
                r["doc_hash"] == want[doc]
                and r["chunker"] == chunker.version
                and r["tokenizer"] == chunker.tokenizer_id
                for r in doc_rows
            ):
                found[doc] = doc_rows
    return found


def place(chunk: Chunk, doc: dict, layout: Structure, shift: int | None = None) -> dict:
    """A chunk's location columns: the pages its span covers (null without pages) and the
    headings in force where it starts (null for a document without headings)."""
    where = locate(doc["title"], doc["text"], layout, chunk.start, chunk.end, shift)
    first, last = where.pages if where.pages is not None else (None, None)
    return {
        "page_first": first,
        "page_last": last,
        "section": list(where.section) if layout.sections else None,
    }
