"""The LanceDB store: scoped atomic replacement, model lineage, safe filters."""

import dataclasses

import pyarrow as pa
import pytest

from corpusmill.errors import ModelMismatchError
from corpusmill.model.card import ModelCard
from corpusmill.store import Store, documents_schema, in_filter, rows_to_table, table_card

CARD = ModelCard("org/model", "abc123", 4, "mean", True, 128)


def _docs(*ids, text="t", partition="shard-00"):
    rows = [
        {
            "doc_id": i,
            "doc_key": i,
            "source": "s",
            "uri": i,
            "partition": partition,
            "title": "",
            "text": text,
            "content_hash": text,
        }
        for i in ids
    ]
    return rows_to_table(rows, documents_schema())


def test_replace_rows_upserts_and_deletes_in_scope_only(db_uri):
    store = Store(db_uri)
    t = store.ensure("documents", documents_schema())
    store.replace_rows(t, "doc_id", _docs("a", "b", "c"), None)
    store.replace_rows(t, "doc_id", _docs("z", partition="shard-01"), None)
    # replace {a, b} by {a', d}: b leaves, c (not in scope) and z (other partition) stay
    result = store.replace_rows(
        t, "doc_id", _docs("a", "d", text="new"), in_filter("doc_id", ["a", "b"])
    )
    assert result == {"inserted": 1, "updated": 1, "deleted": 1}
    rows = {r["doc_id"]: r["text"] for r in store.scan("documents", ["doc_id", "text"]).to_pylist()}
    assert rows == {"a": "new", "c": "t", "d": "new", "z": "t"}
    # the same write again changes nothing
    store.replace_rows(t, "doc_id", _docs("a", "d", text="new"), in_filter("doc_id", ["a", "b"]))
    assert store.count("documents") == 4


def test_a_view_at_versions_reads_the_pinned_version_and_cannot_write(db_uri):
    store = Store(db_uri).lean()  # small Lance caches: the same reads
    t = store.ensure("documents", documents_schema())
    store.replace_rows(t, "doc_id", _docs("a"), None)
    then = store.version("documents")
    store.replace_rows(t, "doc_id", _docs("b"), None)
    pinned = store.at_versions(documents=then)
    assert pinned.scan("documents", ["doc_id"])["doc_id"].to_pylist() == ["a"]
    assert pinned.count("documents") == 1 and store.count("documents") == 2
    with pytest.raises(Exception, match="(?i)version|checkout|time.travel"):
        pinned.open("documents").add(_docs("c"))
    assert store.count("documents") == 2


def test_embeddings_table_records_and_enforces_its_model(db_uri):
    store = Store(db_uri)
    store.ensure_embeddings(CARD)
    meta = table_card(store.open("embeddings").schema)
    assert meta == {
        "model_id": "org/model",
        "revision": "abc123",
        "dimension": "4",
        "pooling": "mean",
        "normalize": "true",
    }
    store.ensure_embeddings(CARD)  # same model: fine
    same_dim_other_model = ModelCard("org/other", "fff000", 4, "mean", True, 128)
    with pytest.raises(ModelMismatchError, match="org/other"):
        Store(db_uri).ensure_embeddings(same_dim_other_model)


def test_filters_quote_hostile_values(db_uri):
    store = Store(db_uri)
    t = store.ensure("documents", documents_schema())
    store.replace_rows(t, "doc_id", _docs("a", "b"), None)
    for hostile in ["x' OR '1'='1", "a'; DELETE FROM documents; --", '"a"', "a' OR doc_id != '"]:
        assert store.scan("documents", ["doc_id"], in_filter("doc_id", [hostile])).num_rows == 0
        store.replace_rows(t, "doc_id", None, in_filter("doc_id", [hostile]))
    assert store.count("documents") == 2
    # LanceDB's parser treats \' as an escaped quote: such values are refused outright
    # (write paths filter on hex keys, see ids.doc_key)
    with pytest.raises(ValueError, match="backslash"):
        in_filter("doc_id", ["a\\' OR true OR '"])


def test_scan_of_missing_table_is_empty(db_uri):
    assert Store(db_uri).scan("embeddings", ["chunk_id"]).num_rows == 0
    # callers read the columns they asked for, so an empty result still has them
    empty = Store(db_uri).scan("chunks", ["chunk_id", "doc_id"])
    assert empty.column_names == ["chunk_id", "doc_id"] and empty.num_rows == 0


def test_a_chunks_table_from_before_stored_ids_gains_the_columns(db_uri):
    from corpusmill.store import chunk_fields, chunks_schema

    store = Store(db_uri)
    old_row = {f.name: "x" for f in chunk_fields() if pa.types.is_string(f.type)}
    old_row |= {"position": 0, "n_tokens": 3}
    old = store.db.create_table("chunks", schema=pa.schema(chunk_fields()))
    old.add(rows_to_table([old_row], pa.schema(chunk_fields())))
    table = store.ensure("chunks", chunks_schema())
    assert table.schema.names == chunks_schema().names
    new_row = old_row | {"chunk_id": "y", "input_ids": [101, 7, 102], "tokenizer": "t1"}
    store.replace_rows(table, "chunk_id", rows_to_table([new_row], chunks_schema()), None)
    rows = store.scan("chunks", ["chunk_id", "input_ids", "tokenizer"]).to_pylist()
    assert sorted(rows, key=lambda r: r["chunk_id"]) == [
        {"chunk_id": "x", "input_ids": None, "tokenizer": None},
        {"chunk_id": "y", "input_ids": [101, 7, 102], "tokenizer": "t1"},
    ]
    assert store.ensure("chunks", chunks_schema()).version == table.version  # no-op now


def test_embeddings_sync_reads_a_chunks_table_from_before_stored_ids(db_uri):
    """Only the embeddings asset re-run on an old store: no ids to read, texts embed."""
    from corpusmill.engine.runner import BatchEngine
    from corpusmill.ids import doc_key
    from corpusmill.store import chunk_fields
    from corpusmill.sync import sync_embeddings
    from tests.fakes import FakeHashEncoder

    store = Store(db_uri)
    rows = [
        {f.name: f"{f.name}-{i}" for f in chunk_fields() if pa.types.is_string(f.type)}
        | {"position": 0, "n_tokens": 3, "partition": "shard-00", "text": f"text number {i}"}
        | {"doc_key": doc_key(f"doc_id-{i}")}
        for i in range(3)
    ]
    store.db.create_table("chunks", rows_to_table(rows, pa.schema(chunk_fields())))
    engine = BatchEngine(FakeHashEncoder(dim=4))
    stats = []

    def embed(items, sink):
        stats.append(engine.run(items, sink, text_of=lambda item: item[1]))

    # The fake's vectors are not unit length: its card says so, or they would be quarantined.
    card = dataclasses.replace(CARD, normalize=False)
    report = sync_embeddings(store, embed, card, ["shard-00"], tokenizer_id="t1")
    assert report.chunks_embedded == 3 and report.rows == 3
    assert stats[0].pretokenized == 0


def test_a_table_from_before_keys_gains_its_primary_key(db_uri):
    from corpusmill.store.schemas import primary_key

    store = Store(db_uri)
    plain = pa.schema([pa.field(f.name, f.type) for f in documents_schema()])  # nullable, no key
    store.db.create_table("documents", schema=plain).add(
        _docs("a", "b").cast(plain)  # rows written by the older corpusmill stay
    )
    assert primary_key(store.open("documents").schema) is None
    table = store.ensure("documents", documents_schema())
    assert primary_key(table.schema) == "doc_id"
    assert not table.schema.field("doc_id").nullable
    assert store.count("documents") == 2
    version = store.version("documents")
    store.ensure("documents", documents_schema())  # declared once: no further commits
    assert store.version("documents") == version


def test_new_tables_are_created_with_their_keys(db_uri):
    from corpusmill.store.schemas import PRIMARY_KEYS, primary_key

    store = Store(db_uri)
    store.ensure("documents", documents_schema())
    store.ensure_embeddings(CARD)
    for name in ("documents", "embeddings"):
        assert primary_key(store.open(name).schema) == PRIMARY_KEYS[name]


def _blocked(take, hold, seconds=0.5) -> bool:
    """Whether `take()` waits while another thread holds `hold()`."""
    import threading

    held, release, got = threading.Event(), threading.Event(), threading.Event()

    def holder():
        with hold():
            held.set()
            release.wait(10)

    def taker():
        with take():
            got.set()

    h = threading.Thread(target=holder)
    h.start()
    held.wait(10)
    t = threading.Thread(target=taker)
    t.start()
    blocked = not got.wait(seconds)
    release.set()
    h.join(10)
    t.join(10)
    assert got.is_set()  # once the holder is done, the taker gets it
    return blocked


def test_shard_locks_let_disjoint_writers_through_and_queue_overlapping_ones(db_uri):
    store = Store(db_uri)
    assert not _blocked(lambda: store.write_lock(["02", "03"]), lambda: store.write_lock(["00"]))
    assert _blocked(lambda: store.write_lock(["00", "05"]), lambda: store.write_lock(["05"]))
    # whole-store work excludes shard writers, both ways round
    assert _blocked(lambda: store.write_lock(), lambda: store.write_lock(["07"]))
    assert _blocked(lambda: store.write_lock(["07"]), lambda: store.write_lock())


def test_a_shard_writer_cannot_silently_upgrade_to_the_whole_store(db_uri):
    store = Store(db_uri)
    with (
        store.write_lock(["01"]),
        pytest.raises(RuntimeError, match="whole-store"),
        store.write_lock(),
    ):
        pass
