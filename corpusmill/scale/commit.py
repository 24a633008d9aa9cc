"""Commit fragments that workers wrote, once: the driver's half of the distributed write.

Workers write their rows as Lance fragments (data files under fresh names, invisible until
a manifest names them). The driver then makes one commit that adds them and, in the same
commit, deletes the old rows of the documents they replace (a deletion file per touched
fragment): readers see the old version of every document or the new one, never neither.

A commit carries the run's key in its transaction properties. Before committing, the
driver reads the transactions since the version it planned against; if one carries the
key, this commit already happened (a driver retried after the commit landed but before it
heard so) and is skipped: appending the same fragments again would double every row.
A driver killed before the commit leaves only unreferenced files, which no reader sees
and `cleanup_old_versions` removes; the rerun plans and commits afresh.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

RUN_KEY = "corpusmill.run_key"


@dataclass
class CommitResult:
    committed: bool  # False: the run key was already committed, nothing was written
    version: int
    seconds: float
    attempts: int = 1
    new_rows: int = 0


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
    fragments: Sequence,
    delete_where: str | None,
    run_key: str,
    read_version: int,
    storage_options: dict[str, str] | None = None,
    max_attempts: int = 10,
) -> CommitResult:
    """Add `fragments` (FragmentMetadata) and delete the rows matching `delete_where`, in
    one commit tagged `run_key`, unless a commit since `read_version` already carries it.

    A concurrent writer that committed in between makes Lance refuse a commit whose
    deletions touch the fragments it changed; the deletions are then recomputed against
    the new version and the commit retried (the fragments stay valid: they are just files).
    """
    import lance

    t0 = time.perf_counter()
    options = storage_options or None
    for attempt in range(1, max_attempts + 1):
        ds = lance.dataset(table_uri, storage_options=options)
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
            removed_fragment_ids=removed, updated_fragments=updated, new_fragments=list(fragments)
        )
        tx = lance.Transaction(
            read_version=ds.version, operation=op, transaction_properties={RUN_KEY: run_key}
        )
        try:
            done = lance.LanceDataset.commit(table_uri, tx, storage_options=options)
        except OSError as e:  # lance raises its commit conflicts as OSError
            if "conflict" not in str(e).lower() or attempt == max_attempts:
                raise
            time.sleep(0.05 * attempt)
            continue
        rows = sum(f.physical_rows for f in fragments)
        return CommitResult(True, done.version, time.perf_counter() - t0, attempt, rows)
    raise RuntimeError("unreachable")
