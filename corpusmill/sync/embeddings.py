"""`chunks` -> `embeddings` in this process: embed only content the table does not hold yet,
streaming.

Stale documents are read from `chunks` in groups as the engine asks for more text, so
memory is bounded by the engine's window and the groups in flight, not by the partition.
A group is committed (one atomic `merge_insert`) as soon as every one of its chunks has a
vector, so a changed document's new chunks replace its old ones in a single commit.
What each document and chunk needs (stale or gone, reuse, stored ids or text, quarantine,
the rows) is decided by `embed_step`, as on the Ray path (`corpusmill.scale`).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from corpusmill.engine.inputs import TokenIds
from corpusmill.engine.progress import ProgressMeter
from corpusmill.ids import doc_key
from corpusmill.store import Store, groups_of
from corpusmill.sync.embed_step import (
    CHUNK_SET,
    Changes,
    ChunkBatch,
    EmbeddingsReport,
    EmbedRules,
    Item,
    chunk_columns,
    chunk_sets,
    stored_vectors,
)
from corpusmill.sync.scope import DOC_GROUP, docs_filter, partition_filter

Embed = Callable[[Iterable[tuple[str, str | TokenIds]], Callable], object]


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
    table = store.ensure_embeddings(card)
    rules = EmbedRules(card, tokenizer_id)
    pf = partition_filter(partitions)
    changes = Changes.against(store, chunk_sets(store.scan("chunks", CHUNK_SET, pf)), pf, card)
    report = changes.report()
    if progress is not None:
        progress.total = report.chunks_to_embed
    committer = _GroupCommitter(store, table, rules, report)
    chunk_table = store.open("chunks")
    columns = chunk_columns(chunk_table.schema.names if chunk_table is not None else ())
    scan_vectors = functools.partial(store.scan_in, "embeddings")

    def items() -> Iterator[Item]:
        for group in groups_of(changes.stale, DOC_GROUP):
            rows = store.scan_in("chunks", columns, "doc_key", [doc_key(d) for d in group])
            rows = rows.to_pylist()
            hashes = {r["content_hash"] for r in rows} & changes.known
            batch = ChunkBatch(rules, rows, stored_vectors(scan_vectors, hashes, rules))
            yield from committer.add(list(group), batch)

    embed(items(), committer.sink)
    committer.flush_all()
    # Removed documents leave last: their vectors may serve the same content under a new
    # id (a renamed file, a record re-keyed by issue 15's id scheme) without re-embedding.
    for group in groups_of(changes.gone):
        store.replace_rows(table, "chunk_id", None, docs_filter(group))
    changes.settle(report, store)
    report.rows = store.count("embeddings", pf)
    report.sync_seconds = round(time.perf_counter() - t0, 3)
    return report


class _GroupCommitter:
    """Routes the engine's rows to their document group and commits a group once all of it
    is ready.

    `add` runs in the engine's tokeniser thread (it pulls the item iterator) and `sink` in
    its writer thread, so both hold one lock; commits happen under it too.
    """

    def __init__(self, store: Store, table, rules: EmbedRules, report: EmbeddingsReport) -> None:
        self.store, self.table, self.rules, self.report = store, table, rules, report
        self.pending: dict[int, tuple[list[str], ChunkBatch]] = {}  # group -> docs, batch
        self.owner: dict[str, int] = {}  # chunk id -> its group, while the engine has it
        self.groups = 0
        self.lock = threading.Lock()

    def add(self, docs: list[str], batch: ChunkBatch) -> list[Item]:
        with self.lock:
            gid, self.groups = self.groups, self.groups + 1
            self.pending[gid] = (docs, batch)
            for cid, _item in batch.todo:
                self.owner[cid] = gid
            if batch.ready:
                self._commit(gid)
            return batch.todo

    def sink(self, items: list[Item], rows: np.ndarray, failed: dict[int, str]) -> None:
        with self.lock:
            touched = set()
            verdicts = self.rules.verdicts(rows, failed)
            for (cid, _item), vector, verdict in zip(items, rows, verdicts, strict=True):
                gid = self.owner.pop(cid)
                self.pending[gid][1].take(cid, vector, verdict)
                touched.add(gid)
            for gid in sorted(touched):
                if self.pending[gid][1].ready:
                    self._commit(gid)

    def flush_all(self) -> None:
        with self.lock:
            for gid in sorted(self.pending):
                waiting = self.pending[gid][1].waiting
                if waiting:
                    raise RuntimeError(f"engine returned no result for {len(waiting)} chunks")
                self._commit(gid)

    def _commit(self, gid: int) -> None:
        docs, batch = self.pending.pop(gid)
        self.store.replace_rows(self.table, "chunk_id", batch.table(), docs_filter(docs))
        self.report.add(batch.outcome)
