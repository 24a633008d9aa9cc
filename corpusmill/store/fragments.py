"""The distributed write: pinned reads, fragments written elsewhere, one keyed commit.

Lance's own Ray integration (lance-ray) keeps this in one datasink; here it is this module,
reached through `Store.snapshot` and `Store.commit_fragments`, so the exactly-once argument
is made in one file:

- A `Snapshot` is one table at one version (pylance). The Ray driver plans from ids and row
  addresses read from one; the workers read their chunks, and the stored vectors they reuse,
  at the versions the driver planned against, so they see exactly the rows it planned.
- Workers write their rows as Lance fragments (`Snapshot.write_fragments`): data files under
  fresh names, invisible until a manifest names them. Only their metadata (JSON) returns.
- The driver makes one commit (`commit_fragments`) that adds them and, in the same commit,
  deletes the old rows of the documents they replace (a deletion file per touched fragment):
  readers see the old version of every document or the new one, never neither.

A commit carries the run's key in its transaction properties. Before committing, the driver
reads the transactions since the version it planned against; if one carries the key, this
commit already happened (a driver retried after the commit landed but before it heard so)
and is skipped: appending the same fragments again would double every row. A driver killed
before the commit leaves only unreferenced files, which no reader sees and
`cleanup_old_versions` removes; the rerun plans and commits afresh.

pylance is the `scale` extra: it is imported only when one of these runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa

from corpusmill.store.predicates import groups_of, in_filter

RUN_KEY = "corpusmill.run_key"
# The dataset a commit opens is read once (its recent transactions, its fragments): a small
# metadata cache, so a driver making many commits does not keep each version's manifest.
COMMIT_METADATA_CACHE = 4 * 2**20


@dataclass
class CommitResult:
    committed: bool  # False: the run key was already committed, nothing was written
    version: int
    seconds: float
    attempts: int = 1
    new_rows: int = 0


class Snapshot:
    """One table at one version: reads see only that version, and fragments written here
    take its schema and storage format."""

    def __init__(
        self, table_uri: str, storage_options: dict[str, str], version: int | None = None
    ) -> None:
        import lance

        self._uri = table_uri
        self._options = storage_options or None
        self._ds = lance.dataset(table_uri, version=version, storage_options=self._options)

    @property
    def version(self) -> int:
        return int(self._ds.version)

    @property
    def column_names(self) -> list[str]:
        return list(self._ds.schema.names)

    def scan(
        self,
        columns: Sequence[str],
        where: str | None = None,
        *,
        fragments: Sequence[int] | None = None,
        with_row_address: bool = False,
    ) -> pa.Table:
        """Rows matching `where`, only `columns`; only in `fragments` (ids) when given."""
        frags = None
        if fragments is not None:
            frags = [f for f in map(self._ds.get_fragment, fragments) if f is not None]
        return self._ds.scanner(
            columns=list(columns), filter=where, fragments=frags, with_row_address=with_row_address
        ).to_table()

    def count(self, where: str | None = None) -> int:
        return int(self._ds.count_rows(filter=where))

    def batches(self, columns: Sequence[str], where: str | None = None) -> Iterator[pa.RecordBatch]:
        """Rows matching `where`, only `columns`, as a stream of record batches: what a
        caller that must not hold the whole column reads."""
        yield from self._ds.scanner(columns=list(columns), filter=where).to_batches()

    def scan_in(
        self,
        columns: Sequence[str],
        column: str,
        values: Sequence[str],
        *,
        fragments: Sequence[int] | None = None,
    ) -> pa.Table:
        """Rows whose `column` is one of `values` (chunked into several IN lists)."""
        parts = [
            self.scan(columns, in_filter(column, group), fragments=fragments)
            for group in groups_of(list(values))
        ]
        if not parts:
            return pa.schema([self._ds.schema.field(c) for c in columns]).empty_table()
        return pa.concat_tables(parts)

    def write_fragments(self, rows: pa.Table, max_rows_per_file: int = 1024 * 1024) -> list[dict]:
        """Write `rows` as new data files of this table; their metadata, as JSON-able dicts,
        for `commit_fragments`. Nothing is visible until a commit names them."""
        from lance.fragment import write_fragments

        if rows.num_rows == 0:
            return []
        schema = pa.schema(list(self._ds.schema), metadata=None)
        rows = rows.select(schema.names).cast(schema)
        written = write_fragments(
            rows,
            self._uri,
            schema=schema,
            storage_options=self._options,
            data_storage_version=self._ds.data_storage_version,
            max_rows_per_file=max_rows_per_file,  # Lance's default
        )
        return [f.to_json() for f in written]


def committed_run_keys(dataset, since_version: int) -> set[str]:
    """Run keys of the commits after `since_version` (newest first, as Lance lists them)."""
    recent = dataset.version - since_version
    if recent <= 0:
        return set()
    keys = set()
    for tx in dataset.get_transactions(recent):
        props = getattr(tx, "transaction_properties", None) or {}
        if RUN_KEY in props:
            keys.add(props[RUN_KEY])
    return keys


def commit_fragments(
    table_uri: str,
    storage_options: dict[str, str],
    fragments: Sequence[dict],
    delete_where: str | None,
    run_key: str,
    read_version: int,
    max_attempts: int = 10,
) -> CommitResult:
    """Add `fragments` (as `write_fragments` returned them) and delete the rows matching
    `delete_where`, in one commit tagged `run_key`, unless a commit since `read_version`
    already carries it.

    A concurrent writer that committed in between makes Lance refuse a commit whose
    deletions touch the fragments it changed; the deletions are then recomputed against
    the new version and the commit retried (the fragments stay valid: they are just files).
    """
    import lance
    from lance.fragment import FragmentMetadata

    t0 = time.perf_counter()
    options = storage_options or None
    new = [FragmentMetadata.from_json(json.dumps(f)) for f in fragments]
    for attempt in range(1, max_attempts + 1):
        ds = lance.dataset(
            table_uri, storage_options=options, metadata_cache_size_bytes=COMMIT_METADATA_CACHE
        )
        if run_key in committed_run_keys(ds, read_version):
            return CommitResult(False, ds.version, time.perf_counter() - t0, attempt)
        removed, updated = [], []
        if delete_where:
            for frag in ds.get_fragments():
                after = frag.delete(delete_where)
                if after is None:
                    removed.append(frag.fragment_id)
                elif after.deletion_file != frag.metadata.deletion_file:
                    updated.append(after)
        op = lance.LanceOperation.Update(
            removed_fragment_ids=removed, updated_fragments=updated, new_fragments=new
        )
        tx = lance.Transaction(
            read_version=ds.version, operation=op, transaction_properties={RUN_KEY: run_key}
        )
        try:
            # Committed on `ds`: the new version is opened in its small-cache session.
            done = lance.LanceDataset.commit(ds, tx, storage_options=options)
        except OSError as e:  # lance raises its commit conflicts as OSError
            if "conflict" not in str(e).lower() or attempt == max_attempts:
                raise
            time.sleep(0.05 * attempt)
            continue
        rows = sum(f.physical_rows for f in new)
        return CommitResult(True, done.version, time.perf_counter() - t0, attempt, rows)
    raise RuntimeError("unreachable")
