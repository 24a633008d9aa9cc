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
from corpusmill.ids import doc_key
from corpusmill.sources import Structure, document_body, locate
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
) -> ChunksReport:
    """Re-chunk documents whose hash (or the chunker version) changed; drop removed ones.

    `donors`: other generations' views whose model has this chunker's tokenizer (a new
    revision or a fine-tune of the same base): a document they hold at its current hash,
    cut by the same chunker version and tokenizer, has exactly the chunks this step would
    cut (ids, text, token ids), so they are copied instead of tokenised again."""
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
        bodies = [(r["doc_id"], document_body(r["title"], r["text"])) for r in full]
        result = chunker.chunk_documents(bodies)
        by_doc = {r["doc_id"]: r for r in full}
        layouts = {d: Structure.from_json(r.get("structure") or "") for d, r in by_doc.items()}
        rows = [
            {
                **place(c, by_doc[c.doc_id], layouts[c.doc_id]),
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
            for c in result.chunks
        ] + [row for rows in copied.values() for row in rows]
        report.documents_copied += len(copied)
        report.truncated += result.truncated
        report.chunks_written += len(rows)
        report.documents_chunked += len(group)
        store.replace_rows(
            table, "chunk_id", rows_to_table(rows, chunks_schema()), docs_filter(group)
        )
    for group in groups_of(gone):
        store.replace_rows(table, "chunk_id", None, docs_filter(group))
    report.documents_removed = len(gone)
    totals = store.scan("chunks", ["n_tokens"], pf)
    report.chunks_total = totals.num_rows
    report.tokens_total = (
        int(pa.compute.sum(totals["n_tokens"]).as_py() or 0) if totals.num_rows else 0
    )
    return report


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


def place(chunk: Chunk, doc: dict, layout: Structure) -> dict:
    """A chunk's location columns: the pages its span covers (null without pages) and the
    headings in force where it starts (null for a document without headings)."""
    where = locate(doc["title"], doc["text"], layout, chunk.start, chunk.end)
    first, last = where.pages if where.pages is not None else (None, None)
    return {
        "page_first": first,
        "page_last": last,
        "section": list(where.section) if layout.sections else None,
    }
