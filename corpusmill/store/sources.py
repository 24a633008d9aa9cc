"""The sources a store holds, and removing one: `corpusmill sources list|remove`.

A source is the label rows carry in their `source` column (`pydoc`, a folder's absolute
path, an `s3://` prefix, a `LABEL=`); `remove` also takes one file's path, for a file
reached through its folder. Removal deletes every row of the source's documents from every
table: the shared `documents` and `quarantine`, and each generation's `chunks`,
`embeddings` and `rerank_scores`: one delete, so one commit, per table, under the store's
whole-store write lock. The rows are found again in each table (not only in `documents`),
so a removal stopped between two commits is finished by running it again: each table is
left with none of them, exactly once; the documents' rows go last, so `list` shows a source
until its removal is complete.

Rows are matched here, in Python, and deleted by their key: chunk, quarantine and score ids
are hex digests and documents are named by `doc_key`, so no name a user chose is ever
formatted into a filter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from corpusmill.ids import doc_key
from corpusmill.store.predicates import groups_of, in_filter
from corpusmill.store.schemas import PRIMARY_KEYS
from corpusmill.store.store import Store

SHARED_TABLES = ("quarantine", "documents")  # documents last: see the module's docstring


@dataclass
class SourceSummary:
    source: str
    documents: int = 0
    chunks: int = 0  # in the live generation
    quarantined: int = 0

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class Removal:
    """What `remove_source` matched and deleted: rows per physical table."""

    name: str
    sources: list[str] = field(default_factory=list)
    documents: int = 0
    rows: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def _views(store: Store) -> list[Store]:
    """The plain-named view (shared tables, first generation) and every other generation's."""
    from corpusmill.store.generations import read_registry

    suffixes = sorted({g.suffix for g in read_registry(store).generations.values()} | {""})
    return [store.for_generation(s) for s in suffixes]


def _rows(view: Store, name: str, columns: list[str]) -> list[dict]:
    table = view.open(name)
    if table is None:
        return []
    present = [c for c in columns if c in table.schema.names]
    return view.scan(name, present).to_pylist()


def list_sources(store: Store) -> list[SourceSummary]:
    """Every source with documents, chunks (live generation) or quarantine rows, by label."""
    from corpusmill.store.generations import read_registry

    by: dict[str, SourceSummary] = {}

    def get(source: str) -> SourceSummary:
        return by.setdefault(source, SourceSummary(source))

    for r in _rows(store, "documents", ["source"]):
        get(r["source"]).documents += 1
    for r in _rows(store, "quarantine", ["source"]):
        get(r["source"]).quarantined += 1
    live = read_registry(store).live_generation
    if live is not None:
        counts = Counter(r["source"] for r in _rows(live.view(store), "chunks", ["source"]))
        for source, n in counts.items():
            get(source).chunks = n
    return [by[s] for s in sorted(by)]


def _matcher(store: Store, names: list[str], path: str) -> tuple[Callable[[dict], bool], list[str]]:
    """Which rows are meant: the first of `names` that is a source label (the name as
    given, then as `ingest` would have labelled it), else the documents of the one file
    at `path` (through whatever folder it was ingested: its rows' `uri`)."""
    labels = {r["source"] for r in _rows(store, "documents", ["source"])}
    labels |= {r["source"] for r in _rows(store, "quarantine", ["source"])}
    for view in _views(store):
        labels |= {r["source"] for r in _rows(view, "chunks", ["source"])}
    for candidate in dict.fromkeys(names):
        if candidate in labels:
            return (lambda r, c=candidate: r.get("source") == c), [candidate]

    def of_file(r: dict) -> bool:
        uri = r.get("uri") or ""
        return uri == path or uri.startswith(path + "#")

    return of_file, []


def remove_source(store: Store, names: list[str], path: str) -> Removal:
    """Delete every row of the documents meant (`_matcher`) from every table of every
    generation, one commit per table that holds any. The caller holds the store's
    whole-store write lock."""
    matches, labels = _matcher(store, names, path)
    removal = Removal(names[0], labels)
    views = _views(store)
    columns = ["doc_id", "source", "uri"]
    doomed: set[str] = set()
    for view, table in [(v, t) for v in views for t in ("chunks", "embeddings")] + [
        (store, t) for t in SHARED_TABLES
    ]:
        doomed |= {r["doc_id"] for r in _rows(view, table, columns) if matches(r)}
    if not doomed:
        return removal
    removal.documents = sum(
        1 for r in _rows(store, "documents", ["doc_id"]) if r["doc_id"] in doomed
    )
    targets = [(view, t) for view in views for t in ("rerank_scores", "embeddings", "chunks")]
    targets += [(store, t) for t in SHARED_TABLES]
    for view, table in targets:
        deleted = _delete_docs(view, table, doomed)
        if deleted:
            removal.rows[view.physical(table)] = deleted
    return removal


def _delete_docs(view: Store, name: str, doomed: set[str]) -> int:
    """Delete the rows of `doomed` documents from `name` in one commit; how many."""
    key = "doc_key" if name == "documents" else PRIMARY_KEYS[name]
    rows = _rows(view, name, list(dict.fromkeys([PRIMARY_KEYS[name], "doc_id"])))
    keys = sorted(
        doc_key(r["doc_id"]) if key == "doc_key" else r[key] for r in rows if r["doc_id"] in doomed
    )
    if not keys:
        return 0
    table = view.open(name)
    where = " OR ".join(f"({in_filter(key, group)})" for group in groups_of(keys))
    view.replace_rows(table, key, None, where)
    return len(keys)
