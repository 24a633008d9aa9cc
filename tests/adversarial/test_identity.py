"""Identity that cannot collide: files and records, records of two files, one record id
twice in a file, two sources under one label. Each case used to lose a valid document
without a word (issue 15, item 1)."""

from __future__ import annotations

import json

import pytest

from corpusmill.errors import ConfigError
from corpusmill.ids import ALL_PARTITIONS, doc_id_for, parse_doc_id, record_id_for
from corpusmill.sources import Document, Quarantined, ReadOptions, read_source
from corpusmill.store import Store
from corpusmill.sync import sync_documents
from tests.runs import ingest, tiny_settings


def _items(path):
    items = list(read_source(str(path), label="src"))
    docs = [i for i in items if isinstance(i, Document)]
    bad = [i for i in items if isinstance(i, Quarantined)]
    return docs, bad


def test_a_record_cannot_take_a_files_id(tmp_path):
    (tmp_path / "a.txt").write_text("the file")
    (tmp_path / "r.jsonl").write_text(json.dumps({"_id": "a.txt", "text": "the record"}) + "\n")
    docs, bad = _items(tmp_path)
    assert sorted(d.text for d in docs) == ["the file", "the record"]
    assert len({d.doc_id for d in docs}) == 2 and bad == []


def test_the_same_record_id_in_two_files_gives_two_documents(tmp_path):
    for name in ("x.jsonl", "y.jsonl"):
        (tmp_path / name).write_text(json.dumps({"_id": "1", "text": f"from {name}"}) + "\n")
    docs, bad = _items(tmp_path)
    assert sorted(d.text for d in docs) == ["from x.jsonl", "from y.jsonl"]
    assert len({d.doc_id for d in docs}) == 2 and bad == []


def test_a_record_id_twice_in_one_file_keeps_the_first_and_quarantines_the_second(tmp_path):
    lines = [
        {"_id": "1", "text": "first"},
        {"_id": "2", "text": "other"},
        {"_id": 1, "text": "again"},
    ]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    docs, bad = _items(tmp_path)
    assert sorted(d.text for d in docs) == ["first", "other"]
    assert len(bad) == 1 and "duplicate record id '1'" in bad[0].reason
    assert bad[0].uri.endswith("d.jsonl:3") and "record 1" in bad[0].reason


def test_hash_signs_and_percent_in_names_cannot_forge_an_id(tmp_path):
    # A file named like "<jsonl>#<record>" and that record: two ids, not one.
    (tmp_path / "a.jsonl").write_text(json.dumps({"_id": "r.txt", "text": "record"}) + "\n")
    (tmp_path / "a.jsonl#r.txt").write_text("file")
    (tmp_path / "b%23c.txt").write_text("percent")
    (tmp_path / "b#c.txt").write_text("hash")
    docs, _ = _items(tmp_path)
    assert len(docs) == 4 and len({d.doc_id for d in docs}) == 4
    for d in docs:
        source, key, record = parse_doc_id(d.doc_id)
        assert source == "src"
        back = doc_id_for(source, key) if record is None else record_id_for(source, key, record)
        assert back == d.doc_id


def test_two_sources_under_one_label_are_refused(tmp_path, db_uri):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(ConfigError, match="share the label 'x'"):
        sync_documents(
            Store(db_uri),
            ALL_PARTITIONS,
            [(str(tmp_path / "a"), "x"), (str(tmp_path / "b"), "x")],
            ReadOptions(max_file_bytes=1 << 20),
        )


def test_colliding_inputs_all_reach_the_documents_table(tmp_path, db_uri):
    (tmp_path / "a.txt").write_text("the file")
    (tmp_path / "r.jsonl").write_text(
        json.dumps({"_id": "a.txt", "text": "the record"})
        + "\n"
        + json.dumps({"_id": "a.txt", "text": "its duplicate"})
        + "\n"
    )
    (tmp_path / "s.jsonl").write_text(json.dumps({"_id": "a.txt", "text": "other file"}) + "\n")
    store = Store(db_uri)
    report = sync_documents(
        store, ALL_PARTITIONS, [(str(tmp_path), "src")], ReadOptions(max_file_bytes=1 << 20)
    )
    texts = sorted(store.scan("documents", ["text"])["text"].to_pylist())
    assert texts == ["other file", "the file", "the record"]
    assert report.quarantined == 1
    reasons = store.scan("quarantine", ["reason"])["reason"].to_pylist()
    assert len(reasons) == 1 and "duplicate record id" in reasons[0]


def test_a_store_with_old_record_ids_is_re_keyed_by_the_next_run(
    tmp_path, db_uri, tiny_embedder_path, monkeypatch
):
    """Before issue 15 a record's id was `source#record`. The next run over all shards
    writes the new ids and deletes the old rows (same run, separate commits), and
    re-embeds nothing: vectors are found again by content hash."""
    import corpusmill.sources.document

    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "r.jsonl").write_text(
        "".join(json.dumps({"_id": str(i), "text": f"record {i} body"}) + "\n" for i in range(8))
    )
    (corpus / "a.txt").write_text("a plain file")
    settings = tiny_settings(db_uri, tiny_embedder_path)
    with monkeypatch.context() as m:  # the old scheme, through the real pipeline
        m.setattr(corpusmill.sources.document, "record_id_for", lambda s, _f, r: doc_id_for(s, r))
        first = ingest([corpus], settings)
    store = Store(db_uri)
    old_ids = set(store.scan("documents", ["doc_id"])["doc_id"].to_pylist())
    assert len(old_ids) == 9 and all(len(parse_doc_id(d)) == 3 for d in old_ids)

    second = ingest([corpus], settings)
    assert second["success"] and second["chunks_embedded"] == 0
    assert second["documents_new"] == 8 and second["documents_deleted"] == 8
    for table in ("documents", "chunks", "embeddings"):
        ids = set(store.scan(table, ["doc_id"])["doc_id"].to_pylist())
        records = {d for d in ids if parse_doc_id(d)[2] is not None}
        assert len(records) == 8 and not (ids & (old_ids - {doc_id_for(str(corpus), "a.txt")}))
    assert store.count("embeddings") == first["rows"]
