"""The driver's commit of worker-written fragments: once per run key, never twice.

Fragments are plain files until a commit names them, so committing the same fragments
again really does add every row a second time (the control below shows it); the run key
in the transaction properties is what makes a replayed commit a no-op.
"""

from collections import Counter

import pyarrow as pa
import pytest

from corpusmill.store import Store, documents_schema, rows_to_table

pytest.importorskip("lance")


def _docs(ids, text):
    rows = [
        {
            "doc_id": i,
            "doc_key": i,
            "source": "s",
            "uri": i,
            "partition": "p",
            "title": "",
            "text": text,
            "content_hash": text,
        }
        for i in ids
    ]
    return rows_to_table(rows, documents_schema())


@pytest.fixture
def table(db_uri):
    store = Store(db_uri)
    t = store.ensure("documents", documents_schema())
    store.replace_rows(t, "doc_id", _docs(["a", "b", "c"], "old"), None)
    return store


def _fragments(store, rows: pa.Table):
    snapshot = store.snapshot("documents")
    return snapshot.version, snapshot.write_fragments(rows)


def _texts(store):
    rows = store.scan("documents", ["doc_id", "text"]).to_pylist()
    return Counter((r["doc_id"], r["text"]) for r in rows)


def test_one_commit_adds_new_rows_and_removes_the_replaced_ones(table):
    version, frags = _fragments(table, _docs(["b", "d"], "new"))
    result = table.commit_fragments("documents", frags, "doc_id IN ('b', 'd')", "run-1", version)
    assert result.committed and result.new_rows == 2
    assert table.version("documents") == version + 1  # one commit, not a delete then an add
    assert _texts(table) == Counter(
        {("a", "old"): 1, ("b", "new"): 1, ("c", "old"): 1, ("d", "new"): 1}
    )


def test_a_replayed_commit_is_skipped(table):
    version, frags = _fragments(table, _docs(["d", "e"], "new"))
    assert table.commit_fragments("documents", frags, None, "run-7", version).committed
    after = table.version("documents")
    replay = table.commit_fragments("documents", frags, None, "run-7", version)
    assert not replay.committed
    assert table.version("documents") == after
    assert max(_texts(table).values()) == 1
    # The control: the same fragments committed under another key are appended again,
    # so the check above is one a missing guard would fail.
    assert table.commit_fragments("documents", frags, None, "run-8", version).committed
    assert _texts(table)[("d", "new")] == 2
