"""The LanceDB store: open, create and migrate tables, read them, and write them atomically.

Tables (one directory, any URI lancedb accepts):
    documents      one row per source document: the corpus as last read
    chunks         token chunks of those documents
    embeddings     chunks + vectors: the table search reads; locked to one model
    quarantine     files and records that could not be read, with the reason
    rerank_scores  (query, chunk, scorer) -> score

Every write goes through a `Store`. Each is a `merge_insert` keyed on the row id whose
"not matched by source" clause
deletes the rows of the documents being replaced, in one commit: a changed document's
old chunks leave in the same commit that adds its new ones, so no reader ever finds it
missing, and a rerun after a crash converges to exactly one row per id. Each table's row
id is declared to Lance as its primary key (`schemas.PRIMARY_KEYS`), so two writers that
race to insert the same new id conflict at commit instead of both inserting it.

Who keeps writers apart (`write_lock`): on a local directory, file locks (one per shard,
so disjoint shard ranges write concurrently; whole-store operations exclude all of them).
On `s3://`, a lease object per shard, created with a conditional put (`lease.py`), the
same way round: a second writer of a shard waits, whole-store work holds every shard. Under
either, Lance commits each version with a conditional put (S3 `If-None-Match`;
`s3+ddb://` uses a DynamoDB table for stores without it), so two commits of the same
version cannot both win, the loser rebases or retries, and the primary keys make a retried
insert an update; `s3+ddb://` and the other object stores have only that, no lease.

The Ray path writes the other way Lance allows, also through here: workers write fragments
and the driver commits them once, keyed by its run (`snapshot`, `commit_fragments`;
`fragments.py`). A worker reopens the store from `ref()`, a picklable `StoreRef`.

Generations: the model-bound tables (`schemas.MODEL_TABLES`) exist once per generation
(`generations.py`). `for_generation(suffix)` is a view of the same store in which those
names mean one generation's tables (`chunks` -> `chunks_<suffix>`), so every sync step, check
and search reads and writes "chunks" and "embeddings" without knowing which generation it
serves; the shared tables and the locks are the same in every view.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from corpusmill.errors import ShardsBusy, StoreError, store_error
from corpusmill.ids import ALL_PARTITIONS
from corpusmill.model.card import ModelCard
from corpusmill.store.fragments import CommitResult, Snapshot, commit_fragments
from corpusmill.store.lease import S3Leases
from corpusmill.store.lock import file_lock
from corpusmill.store.predicates import groups_of, in_filter
from corpusmill.store.schemas import (
    MODEL_TABLES,
    PRIMARY_KEYS,
    check_card,
    embeddings_schema,
    primary_key,
    table_card,
)

OBJECT_STORE_SCHEMES = ("s3://", "s3+ddb://", "gs://", "az://", "abfss://")
# Lance's caches for a process that reads each new version of a table about once (`lean`):
# its default session keeps up to 1 GiB of metadata (every version's manifest, every data
# file's metadata it opened) and 6 GiB of index pages.
LEAN_METADATA_CACHE = 16 * 2**20
LEAN_INDEX_CACHE = 64 * 2**20


@dataclass(frozen=True)
class StoreRef:
    """What another process (a Ray worker) needs to open the same store: picklable."""

    uri: str
    storage_options: dict[str, str] = field(default_factory=dict)
    suffix: str = ""  # the generation the view serves ("": the plain table names)

    def open(self) -> Store:
        return Store(self.uri, self.storage_options).for_generation(self.suffix)


class Store:
    """One LanceDB database. Cheap to construct; opens tables lazily."""

    def __init__(
        self,
        uri: str,
        storage_options: dict[str, str] | None = None,
        owner: str = "",
        on_commit: Callable[[str], None] | None = None,
    ) -> None:
        """`owner` (a run id) is named in this store's leases on S3, for whoever waits.
        `on_commit(table_name)` runs after each commit `replace_rows` makes: the
        adversarial tests stop a run at each commit boundary with it."""
        import lancedb

        self.uri = uri
        self.storage_options = dict(storage_options or {})
        self.owner = owner
        self.on_commit = on_commit
        self.suffix = ""  # see `for_generation`
        self.pinned: dict[str, int] = {}  # see `at_versions`
        self._leases: S3Leases | None = None
        if "://" not in uri:
            try:
                Path(uri).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise (store_error(exc, uri) or exc) from exc
        self.db = lancedb.connect(uri, storage_options=self.storage_options or None)

    @property
    def on_object_store(self) -> bool:
        return self.uri.startswith(OBJECT_STORE_SCHEMES)

    @property
    def leases(self) -> S3Leases | None:
        """The store's shard leases: `s3://` only (they need S3's conditional writes;
        `s3+ddb://` is for servers without them)."""
        if self._leases is None and self.uri.startswith("s3://"):
            self._leases = S3Leases(self.uri, self.storage_options, run_id=self.owner)
        return self._leases

    def ref(self) -> StoreRef:
        return StoreRef(self.uri, dict(self.storage_options), self.suffix)

    def for_generation(self, suffix: str) -> Store:
        """This store with the model-bound tables of the generation whose tables end in
        `suffix` ("": the plain names, a store's first generation). Shares the connection,
        the leases and `on_commit`."""
        view = copy.copy(self)
        view.suffix = suffix
        return view

    def at_versions(self, **versions: int) -> Store:
        """A read-only view of this store in which each table named here is read at the
        given version (`open` checks it out; a write through the view fails). The Ray
        driver plans every slice against the `embeddings` version its run began from, so
        a slice's plan never reads the fragments the run's own earlier commits added."""
        view = copy.copy(self)
        view.pinned = {**self.pinned, **versions}
        return view

    def lean(self) -> Store:
        """This store on a connection whose Lance caches are small (`LEAN_*`): for a
        long-running writer that commits many versions and reads each about once (the Ray
        driver). With the default caches, every new version's manifest (listing every
        fragment so far) stays cached, so the process grows with the run: measured as
        most of the Ray driver's growth from 10k to 1M chunks (BENCHMARKS.md)."""
        import lancedb

        view = copy.copy(self)
        session = lancedb.Session(
            index_cache_size_bytes=LEAN_INDEX_CACHE, metadata_cache_size_bytes=LEAN_METADATA_CACHE
        )
        view.db = lancedb.connect(
            self.uri, storage_options=self.storage_options or None, session=session
        )
        return view

    def physical(self, name: str) -> str:
        """The table `name` means in this view: a model-bound table gets the suffix."""
        return f"{name}_{self.suffix}" if self.suffix and name in MODEL_TABLES else name

    def stage(self, name: str) -> str:
        """A quarantine stage of this view's generation: a chunk one model cannot embed
        may be fine for another, so model stages (`embed`) are named per generation."""
        return f"{name}:{self.suffix}" if self.suffix and name != "source" else name

    def table_uri(self, name: str) -> str:
        """Where Lance keeps `name` (for pylance: `snapshot`, `commit_fragments`)."""
        return f"{self.uri.rstrip('/')}/{self.physical(name)}.lance"

    # -- tables -------------------------------------------------------------------------
    def table_names(self) -> list[str]:
        return list(self.db.list_tables().tables)

    def open(self, name: str):
        """The table, or None if it was never written."""
        physical = self.physical(name)
        if physical not in self.table_names():
            return None
        table = self.db.open_table(physical)
        if name in self.pinned:
            table.checkout(self.pinned[name])
        return table

    def ensure(self, name: str, schema: pa.Schema):
        """The table, created with `schema` if new. A table written by an older corpusmill
        gains the columns it lacks, as nulls (one commit, no rows rewritten): every column
        added to a schema must therefore be nullable and mean "unknown" when null. It also
        gains its primary key (`_declare_key`)."""
        table = self.open(name)
        if table is None:
            table = self._create(name, schema)
        missing = [f for f in schema if f.name not in table.schema.names]
        if missing:
            table.add_columns(missing)
        self._declare_key(name, table)
        return table

    def _create(self, name: str, schema: pa.Schema):
        """Create `name`, or open it if another writer created it first.

        Lance creates a table with an Overwrite commit, and an Overwrite never conflicts:
        two writers creating the same table at once on S3 left versions 1 and 2, the
        second an empty table over the first (a write in between would be lost). So
        creation is serialised: locally by an exclusive file lock, on `s3://` by the
        lease `create`; whoever comes second finds the table and opens it. (On
        `s3+ddb://` and the other object stores nothing serialises it: create the
        tables with one writer first, `create_tables`.) The caller checks the schema and
        model card of what it opened (`ensure`, `ensure_embeddings`)."""
        name = self.physical(name)
        with self.serialised():
            if name in self.table_names():
                return self.db.open_table(name)
            try:
                return self.db.create_table(name, schema=schema)
            except (ValueError, OSError, RuntimeError) as e:
                # "already exists", or Lance's commit conflict with another creator
                if not any(w in str(e).lower() for w in ("exist", "conflict")):
                    raise
            return self.db.open_table(name)

    def serialised(self) -> contextlib.AbstractContextManager[object]:
        """One at a time, across processes: table creation and registering a generation.
        A file lock locally, the `create` lease on `s3://`; nothing on the object stores
        without leases (create the tables and the first generation with one writer)."""
        if not self.on_object_store:
            return file_lock(self.uri, "create")
        if self.leases is not None:
            return self.leases.hold(["create"])
        return contextlib.nullcontext()

    def drop_table(self, name: str) -> bool:
        """Remove the table `name` means in this view; False if it did not exist."""
        physical = self.physical(name)
        if physical not in self.table_names():
            return False
        self.db.drop_table(physical)
        if self.on_commit is not None:
            self.on_commit(physical)
        return True

    def create_tables(self, card: ModelCard) -> None:
        """Every table a run writes, created now (see `_create`)."""
        from corpusmill.store.schemas import chunks_schema, documents_schema, quarantine_schema

        for name, schema in (
            ("documents", documents_schema()),
            ("quarantine", quarantine_schema()),
            ("chunks", chunks_schema()),
        ):
            self.ensure(name, schema)
        self.ensure_embeddings(card)

    @staticmethod
    def _declare_key(name: str, table) -> None:
        """Declare the row id of a table from before keys were declared: made non-nullable
        (Lance refuses a nullable key) and then the key, two metadata-only commits. Every
        write fills the id, so no row holds a null there."""
        key = PRIMARY_KEYS.get(name)
        if key is None or primary_key(table.schema) is not None:
            return
        if table.schema.field(key).nullable:
            table.alter_columns({"path": key, "nullable": False})
        table.set_unenforced_primary_key(key)

    def ensure_embeddings(self, card: ModelCard):
        table = self.ensure("embeddings", embeddings_schema(card))
        check_card(table_card(table.schema), card)
        return table

    def embeddings_card(self) -> dict[str, str] | None:
        table = self.open("embeddings")
        return None if table is None else table_card(table.schema)

    # -- reads --------------------------------------------------------------------------
    def scan(self, name: str, columns: Sequence[str], where: str | None = None) -> pa.Table:
        """All rows matching `where`, only `columns`; an empty table if none exist."""
        table = self.open(name)
        if table is None:
            return pa.table({c: pa.array([], pa.string()) for c in columns})
        query = table.search().select(list(columns))
        if where:
            query = query.where(where)
        return query.limit(None).to_arrow()

    def scan_in(
        self, name: str, columns: Sequence[str], column: str, values: Sequence[str]
    ) -> pa.Table:
        """Rows whose `column` is one of `values` (chunked into several IN lists)."""
        parts = [
            self.scan(name, columns, in_filter(column, part)) for part in groups_of(list(values))
        ]
        parts = [p for p in parts if p.num_rows]
        if not parts:
            return self.scan(name, columns, "false")
        return pa.concat_tables(parts)

    def count(self, name: str, where: str | None = None) -> int:
        table = self.open(name)
        return 0 if table is None else table.count_rows(where)

    def version(self, name: str) -> int:
        table = self.open(name)
        return 0 if table is None else int(table.version)

    def snapshot(self, name: str, version: int | None = None) -> Snapshot:
        """`name` pinned at `version` (None: the latest): reads, and fragment writes."""
        return Snapshot(self.table_uri(name), self.storage_options, version)

    # -- writes -------------------------------------------------------------------------
    def replace_rows(
        self, table, key: str, rows: pa.Table | None, delete_where: str | None
    ) -> dict[str, int]:
        """Upsert `rows` by `key` and delete the target rows matching `delete_where` that
        `rows` does not contain, in one commit."""
        if rows is None or rows.num_rows == 0:
            if delete_where and delete_where != "false":
                before = table.count_rows()
                table.delete(delete_where)
                self._committed(table)
                return {"inserted": 0, "updated": 0, "deleted": before - table.count_rows()}
            return {"inserted": 0, "updated": 0, "deleted": 0}
        rows = rows.select(table.schema.names).cast(table.schema.remove_metadata())
        merge = table.merge_insert(key).when_matched_update_all().when_not_matched_insert_all()
        if delete_where and delete_where != "false":
            merge = merge.when_not_matched_by_source_delete(delete_where)
        result = merge.execute(rows)
        self._committed(table)
        return {
            "inserted": result.num_inserted_rows,
            "updated": result.num_updated_rows,
            "deleted": result.num_deleted_rows,
        }

    def commit_fragments(
        self,
        name: str,
        fragments: Sequence[dict],
        delete_where: str | None,
        run_key: str,
        read_version: int,
    ) -> CommitResult:
        """Make `fragments` (`Snapshot.write_fragments`) visible and delete the rows
        matching `delete_where`, in one commit, once per `run_key` (`fragments.py`)."""
        result = commit_fragments(
            self.table_uri(name),
            self.storage_options,
            fragments,
            delete_where,
            run_key,
            read_version,
        )
        if result.committed and self.on_commit is not None:
            self.on_commit(name)
        return result

    def write_lock(
        self,
        partitions: Sequence[str] | None = None,
        *,
        wait: bool = True,
        scopes: Sequence[str] = (),
    ):
        """Keep writers of this store apart, as narrowly as the work needs.

        `partitions` given: the writer touches only those shards' rows, of the shared
        tables and this view's generation. It holds each shard's lock (in one order, so
        two ranges never deadlock) and the store lock shared, so writers of disjoint
        shards run concurrently and a writer of an overlapping shard waits. A generation
        other than the plain-named one has shard locks of its own, so a build writing a
        new generation never holds back a run that keeps the live one current. `wait`
        False: `ShardsBusy` at once if another writer holds one of them. `partitions`
        None: the whole store (upkeep, index builds, a switch), exclusive against every
        other writer; on `s3://` that is every shard lease of the shared tables and of
        each generation in `scopes` (their suffixes).

        On `s3://` the same with leases (`lease.py`). Other object stores take none:
        `conditional_put_commits`.
        """
        if self.leases is not None:
            if partitions is None:
                names = [_shard(p, s) for s in {"", *scopes} for p in ALL_PARTITIONS]
            else:
                names = [_shard(p, self.suffix) for p in partitions]
            return self.leases.hold(names, wait_s=None if wait else 0.0)
        if self.on_object_store:
            return conditional_put_commits(self.uri)
        if not os.access(self.uri, os.W_OK):  # fail before the run does any work
            raise StoreError(
                f"cannot write the store at {self.uri!r}: permission denied; make it "
                "writable or point CORPUSMILL_DB at a directory you can write"
            )
        if partitions is None:
            return file_lock(self.uri, "store", wait=wait)
        names = [f"partition-{_shard(p, self.suffix)}" for p in sorted(set(partitions))]
        return _shard_locks(self.uri, names, wait)

    def busy(self, partitions: Sequence[str] = ALL_PARTITIONS) -> bool:
        """Whether another writer holds any of `partitions` in this view now (a probe: the
        locks are taken without waiting and given back at once)."""
        try:
            with self.write_lock(partitions, wait=False):
                return False
        except ShardsBusy:
            return True

    def _committed(self, table) -> None:
        if self.on_commit is not None:
            self.on_commit(table.name)

    def check_complete(self) -> None:
        """Refuse to search a store whose first ingest stopped before any vector was
        committed: "no results" would be a lie."""
        if self.count("embeddings") == 0 and self.count("chunks") > 0:
            raise StoreError(
                f"the store at {self.uri!r} is incomplete: it holds chunks but no vectors "
                "(the last ingest failed or was stopped); rerun `corpusmill ingest`"
            )


@contextlib.contextmanager
def conditional_put_commits(uri: str) -> Iterator[None]:
    """What protects writers of an object store without leases (`s3+ddb://`, gs, az):
    nothing to hold.

    Lance writes data files under fresh names and commits by putting the next version's
    manifest with a conditional put (If-None-Match on S3, a DynamoDB row for `s3+ddb://`
    on stores without conditional puts). Of two concurrent commits exactly one wins; the
    other rebases onto it or fails with a retryable conflict (merge_insert retries itself),
    and the declared primary keys turn a concurrent insert of the same id into a conflict
    rather than a duplicate. A file lock here would protect only writers on this machine.
    """
    yield


def _shard(partition: str, suffix: str) -> str:
    """A shard's lock name in the generation with `suffix` ("": shared tables and the
    plain-named generation)."""
    return f"{partition}@{suffix}" if suffix else partition


@contextlib.contextmanager
def _shard_locks(directory: str, names: list[str], wait: bool) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        stack.enter_context(file_lock(directory, "store", shared=True, wait=wait))
        for name in names:
            stack.enter_context(file_lock(directory, name, wait=wait))
        yield
