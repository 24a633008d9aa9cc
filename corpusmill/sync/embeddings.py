"""`chunks` -> `embeddings`: embed only content the table does not hold yet, streaming.

Stale documents are read from `chunks` in groups as the engine asks for more text, so
memory is bounded by the engine's window and the groups in flight, not by the partition.
A group is committed (one atomic `merge_insert`) as soon as every one of its chunks has a
vector, so a changed document's new chunks replace its old ones in a single commit.
A chunk goes to the engine as the token ids the chunker stored with it when they came from
this embedder's tokenizer (`tokenizer_id`), and as text otherwise.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from corpusmill.engine.inputs import TokenIds
from corpusmill.engine.progress import ProgressMeter
from corpusmill.ids import doc_key
from corpusmill.sources import Quarantined
from corpusmill.store import Store, chunks_schema, groups_of
from corpusmill.sync.scope import DOC_GROUP, Report, detail, docs_filter, partition_filter

_CHUNK_COLUMNS = [f.name for f in chunks_schema()]

NON_FINITE = "the model returned a non-finite vector (NaN or infinity) for this chunk"

Embed = Callable[[Iterable[tuple[str, str | TokenIds]], Callable], object]


@dataclass
class EmbeddingsReport(Report):
    rows: int = 0
    documents_updated: int = 0
    documents_removed: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    chunks_failed: int = 0
    chunks_to_embed: int = 0  # known before embedding starts: the progress total
    sync_seconds: float = 0.0
    failed: list[Quarantined] = detail(list)  # chunks quarantined at the embed stage
    embedded_by_partition: Counter[str] = detail(Counter)


def sync_embeddings(
    store: Store,
    embed: Embed,
    card,
    partitions: Sequence[str],
    tokenizer_id: str = "",
    progress: ProgressMeter | None = None,
) -> EmbeddingsReport:
    """Make `embeddings` mirror `chunks` for `partitions`, embedding only new content.

    `embed(items, sink)` streams (chunk_id, text or TokenIds) items through the engine and
    calls `sink(items, rows, failed)` per window; the model resource provides it.
    `tokenizer_id` is the embedder's tokenizer fingerprint: stored ids made under another
    one (or none) are ignored and the text is tokenised. `progress`, when given, gets its
    `total` (chunks of stale documents whose content no stored vector has) before `embed`
    runs; `embed` is expected to advance it.
    """
    t0 = time.perf_counter()
    report = EmbeddingsReport()
    table = store.ensure_embeddings(card)
    pf = partition_filter(partitions)
    want = _chunk_sets(store, "chunks", pf)
    have = _chunk_sets(store, "embeddings", pf)
    stale = sorted(d for d in want if want[d] != have.get(d))
    gone = sorted(d for d in have if d not in want)
    report.documents_updated = len(stale)
    report.documents_removed = len(gone)

    # Content hashes held anywhere in the table: only these are worth a vector lookup.
    known = set(store.scan("embeddings", ["content_hash"])["content_hash"].to_pylist())
    report.chunks_to_embed = sum(1 for d in stale for _c, h in want[d] if h not in known)
    if progress is not None:
        progress.total = report.chunks_to_embed
    committer = _GroupCommitter(store, table, card, report, tokenizer_id)
    # A chunks table from before stored ids has no such columns until it is next synced.
    chunk_table = store.open("chunks")
    present = set(chunk_table.schema.names) if chunk_table is not None else set()
    columns = [c for c in _CHUNK_COLUMNS if c in present]

    def items() -> Iterator[tuple[str, str | TokenIds]]:
        for group in groups_of(stale, DOC_GROUP):
            rows = store.scan_in("chunks", columns, "doc_key", [doc_key(d) for d in group])
            rows = rows.to_pylist()
            reusable = _stored_vectors(store, {r["content_hash"] for r in rows} & known)
            yield from committer.add_group(list(group), rows, reusable)

    embed(items(), committer.sink)
    committer.flush_all()
    # Removed documents leave last: their vectors may serve the same content under a new
    # id (a renamed file, a record re-keyed by issue 15's id scheme) without re-embedding.
    for group in groups_of(gone):
        store.replace_rows(table, "chunk_id", None, docs_filter(group))
    n_wanted = sum(len(v) for v in want.values())
    # Reused = every wanted chunk whose vector was already stored (unchanged or same content).
    report.chunks_reused = n_wanted - report.chunks_embedded - report.chunks_failed
    report.rows = store.count("embeddings", pf)
    report.sync_seconds = round(time.perf_counter() - t0, 3)
    return report


def _chunk_sets(store: Store, table: str, where: str) -> dict[str, set[tuple[str, str]]]:
    """doc_id -> {(chunk_id, content_hash)}: what a document consists of in `table`."""
    rows = store.scan(table, ["chunk_id", "doc_id", "content_hash"], where)
    by_doc: dict[str, set[tuple[str, str]]] = defaultdict(set)
    columns = (rows[k].to_pylist() for k in ("chunk_id", "doc_id", "content_hash"))
    for chunk, doc, digest in zip(*columns, strict=True):
        by_doc[doc].add((chunk, digest))
    return by_doc


def _stored_vectors(store: Store, hashes: set[str]) -> dict[str, list[float]]:
    """Vectors already stored for these chunk contents, wherever they are in the table."""
    if not hashes:
        return {}
    found = store.scan_in("embeddings", ["content_hash", "vector"], "content_hash", sorted(hashes))
    return dict(zip(found["content_hash"].to_pylist(), found["vector"].to_pylist(), strict=True))


class _GroupCommitter:
    """Collects vectors per document group and commits a group once all of it is ready.

    `add_group` runs in the engine's tokeniser thread (it pulls the item iterator) and
    `sink` in its writer thread, so both hold one lock; commits happen under it too.
    """

    def __init__(
        self, store: Store, table, card, report: EmbeddingsReport, tokenizer_id: str
    ) -> None:
        self.store, self.table, self.card, self.report = store, table, card, report
        self.tokenizer_id = tokenizer_id
        self.groups: list[dict] = []  # {docs, rows, missing: set of chunk ids, done}
        self.vectors: dict[str, list[float] | None] = {}
        self.owner: dict[str, int] = {}
        self.partition_of: dict[str, str] = {}
        self.lock = threading.Lock()

    def add_group(
        self, docs: list[str], rows: list[dict], reused: dict[str, list[float]]
    ) -> list[tuple[str, str | TokenIds]]:
        with self.lock:
            gid = len(self.groups)
            missing = set()
            todo = []
            for r in rows:
                ids, made_by = r.pop("input_ids", None), r.pop("tokenizer", None)
                vec = reused.get(r["content_hash"])
                if vec is not None:
                    self.vectors[r["chunk_id"]] = vec
                    continue
                missing.add(r["chunk_id"])
                self.owner[r["chunk_id"]] = gid
                self.partition_of[r["chunk_id"]] = r["partition"]
                usable = ids is not None and self.tokenizer_id and made_by == self.tokenizer_id
                todo.append((r["chunk_id"], TokenIds(ids) if usable else r["text"]))
            self.groups.append({"docs": docs, "rows": rows, "missing": missing, "done": False})
            if not missing:
                self._commit(gid)
            return todo

    def sink(self, items: list[tuple[str, str]], rows: np.ndarray, failed: dict[int, str]) -> None:
        with self.lock:
            touched = set()
            # A NaN or infinite vector (overflow in half precision, a broken weight) would
            # make LanceDB reject the whole commit; that chunk alone is quarantined.
            finite = np.isfinite(rows).all(axis=1) if len(items) else np.ones(0, bool)
            for i, (cid, _text) in enumerate(items):
                gid = self.owner.pop(cid)
                partition = self.partition_of.pop(cid)
                touched.add(gid)
                if i not in failed and not finite[i]:
                    failed = {**failed, i: NON_FINITE}
                if i in failed:
                    self.vectors[cid] = None
                    self._record_failure(gid, cid, failed[i])
                else:
                    self.vectors[cid] = rows[i].tolist()
                    self.report.chunks_embedded += 1
                    self.report.embedded_by_partition[partition] += 1
                self.groups[gid]["missing"].discard(cid)
            for gid in sorted(touched):
                if not self.groups[gid]["missing"]:
                    self._commit(gid)

    def flush_all(self) -> None:
        with self.lock:
            for gid, g in enumerate(self.groups):
                if not g["done"]:
                    if g["missing"]:
                        raise RuntimeError(
                            f"engine returned no result for {len(g['missing'])} chunks"
                        )
                    self._commit(gid)

    def _record_failure(self, gid: int, cid: str, reason: str) -> None:
        row = next(r for r in self.groups[gid]["rows"] if r["chunk_id"] == cid)
        self.report.failed.append(
            Quarantined(
                row["doc_id"], row["source"], f"{row['uri']}#chunk{row['position']}", reason
            )
        )

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
        schema = self.table.schema.remove_metadata()
        table = pa.Table.from_pylist(out, schema=schema) if out else None
        self.store.replace_rows(self.table, "chunk_id", table, docs_filter(g["docs"]))
        g["done"] = True
        g["rows"] = []
