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
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa

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

# Documents one commit of `embeddings` may hold: the document groups one window of the
# engine completes are written together up to this many (fewer, larger Lance commits).
COMMIT_DOCS = 4096

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
    chunk_table = store.open("chunks")
    columns = chunk_columns(chunk_table.schema.names if chunk_table is not None else ())
    scan_vectors = functools.partial(store.scan_in, "embeddings")

    def items(committer: _GroupCommitter) -> Iterator[Item]:
        for group in groups_of(changes.stale, DOC_GROUP):
            rows = store.scan_in("chunks", columns, "doc_key", [doc_key(d) for d in group])
            hashes = set(rows["content_hash"].to_pylist()) & changes.known
            batch = ChunkBatch(rules, rows, stored_vectors(scan_vectors, hashes, rules))
            yield from committer.add(list(group), batch)

    with _GroupCommitter(store, table, rules, report) as committer:
        embed(items(committer), committer.sink)
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
    its writer thread; both hold one lock while they route. Commits run on a thread of
    their own, in the order groups become ready, so neither the reader nor the writer waits
    for Lance: the next window's reading, forward and row checks overlap the commit. The
    groups one `sink` call completes go in one merge-insert of up to `COMMIT_DOCS`
    documents (fewer, larger commits; each document's rows still change in exactly one
    commit). At most `COMMITS_AHEAD` commits
    wait; a failed commit stops the engine (the next `add` or `sink` raises it) and is
    raised when the committer closes. Use as a context manager: leaving it commits what is
    ready and waits for the last commit.
    """

    COMMITS_AHEAD = 4

    def __init__(self, store: Store, table, rules: EmbedRules, report: EmbeddingsReport) -> None:
        self.store, self.table, self.rules, self.report = store, table, rules, report
        self.pending: dict[int, tuple[list[str], ChunkBatch]] = {}  # group -> docs, batch
        self.owner: dict[str, int] = {}  # chunk id -> its group, while the engine has it
        self.groups = 0
        self.lock = threading.Lock()
        self.ready: queue.Queue = queue.Queue(self.COMMITS_AHEAD)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._commit_loop, daemon=True)

    def __enter__(self) -> _GroupCommitter:
        self.thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._put(_DONE)
        self.thread.join()
        if self.error is not None and exc is None:
            raise self.error

    def add(self, docs: list[str], batch: ChunkBatch) -> list[Item]:
        with self.lock:
            gid, self.groups = self.groups, self.groups + 1
            self.pending[gid] = (docs, batch)
            for cid, _item in batch.todo:
                self.owner[cid] = gid
            ready = [self.pending.pop(gid)] if batch.ready else []
        if ready:
            self._put(ready)
        return batch.todo

    def sink(self, items: list[Item], rows: np.ndarray, failed: dict[int, str]) -> None:
        verdicts = self.rules.verdicts(rows, failed)
        with self.lock:
            by_group: dict[int, list[int]] = {}
            for i, (cid, _item) in enumerate(items):
                by_group.setdefault(self.owner.pop(cid), []).append(i)
            for gid, at in by_group.items():
                ids = [items[i][0] for i in at]
                self.pending[gid][1].take_rows(ids, rows[at], [verdicts[i] for i in at])
            ready = [self.pending.pop(g) for g in sorted(by_group) if self.pending[g][1].ready]
        self._put_merged(ready)

    def flush_all(self) -> None:
        with self.lock:
            for _docs, batch in self.pending.values():
                if batch.waiting:
                    raise RuntimeError(f"engine returned no result for {len(batch.waiting)} chunks")
            ready = [self.pending.pop(g) for g in sorted(self.pending)]
        self._put_merged(ready)

    def _put_merged(self, ready: list[tuple[list[str], ChunkBatch]]) -> None:
        """Queue `ready` groups as few commits of at most `COMMIT_DOCS` documents (a group
        is never split)."""
        merged: list[tuple[list[str], ChunkBatch]] = []
        for group in ready:
            if merged and sum(len(d) for d, _b in merged) + len(group[0]) > COMMIT_DOCS:
                self._put(merged)
                merged = []
            merged.append(group)
        if merged:
            self._put(merged)

    def _put(self, item) -> None:
        """Queue a commit, waiting while `COMMITS_AHEAD` wait; raises a failed commit."""
        while True:
            if self.error is not None and item is not _DONE:
                raise self.error
            try:
                self.ready.put(item, timeout=0.1)
                return
            except queue.Full:
                if not self.thread.is_alive():
                    return

    def _commit_loop(self) -> None:
        while True:
            groups = self.ready.get()
            if groups is _DONE:
                return
            if self.error is not None:
                continue  # after a failure nothing more is written
            try:
                self._commit(groups)
            except BaseException as exc:  # raised in the engine's threads and at exit
                self.error = exc

    def _commit(self, groups: list[tuple[list[str], ChunkBatch]]) -> None:
        docs = [d for group_docs, _batch in groups for d in group_docs]
        rows = pa.concat_tables([batch.table() for _docs, batch in groups])
        self.store.replace_rows(self.table, "chunk_id", rows, docs_filter(docs))
        for _docs, batch in groups:
            self.report.add(batch.outcome)


_DONE = object()
