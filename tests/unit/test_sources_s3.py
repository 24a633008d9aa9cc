"""`s3://` sources against moto's S3 server on 127.0.0.1: the listing is paginated and
streamed, names are filtered as in a folder, a folder copied to a prefix reads to the same
documents, an object the store holds unchanged is not fetched, and a vanished, oversized
or unreadable object is quarantined with its reason (issue 24, item 4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from corpusmill.errors import InputError
from corpusmill.ids import doc_id_for, parse_doc_id
from corpusmill.sources import (
    OBJECT_REMOVED,
    Document,
    Quarantined,
    ReadOptions,
    Unchanged,
    read_source,
)
from corpusmill.sources import objects as objects_module
from corpusmill.sources.objects import list_objects, read_object
from tools.sample_documents import docx, pdf

pytestmark = pytest.mark.usefixtures("local_s3")


def _requests(seen) -> tuple[int, int]:
    """(listing requests, object GETs) among the recorded requests."""
    gets = [path for method, path in seen() if method == "GET"]
    lists = sum(1 for path in gets if "list-type=2" in path)
    return lists, len(gets) - lists


@pytest.fixture
def bucket(local_s3, tmp_path):
    """A fresh prefix of the server's bucket: (client, prefix, its s3:// URI, options)."""
    prefix = f"src-{tmp_path.name}"
    return (
        local_s3.client(),
        prefix,
        local_s3.uri(prefix),
        ReadOptions(storage_options=local_s3.storage_options),
    )


def _put(client, bucket_name: str, key: str, data: bytes) -> None:
    client.put_object(Bucket=bucket_name, Key=key, Body=data)


def test_the_listing_is_paginated_and_streamed(local_s3, bucket, monkeypatch):
    client, prefix, _uri, _options = bucket
    for i in range(30):
        _put(client, local_s3.bucket, f"{prefix}/d{i % 3}/f{i:02}.txt", f"text {i}".encode())
    monkeypatch.setattr(objects_module, "PAGE_SIZE", 7)
    with local_s3.recording() as seen:
        listing = list_objects(client, local_s3.bucket, prefix)
        first = next(listing)
        assert _requests(seen) == (1, 0), "one page requested for the first object"
        rest = list(listing)
        assert _requests(seen) == (5, 0), "30 keys in pages of 7: 5 requests, no GET"
    keys = [first.key] + [o.key for o in rest]
    assert keys == sorted(keys) and len(keys) == 30 and keys[0] == "d0/f00.txt"
    assert first.uri == f"s3://{local_s3.bucket}/{prefix}/d0/f00.txt"
    assert first.size == len(b"text 0") and first.etag


def test_names_are_filtered_as_in_a_folder_and_the_prefix_is_a_folder(local_s3, bucket):
    client, prefix, uri, options = bucket
    for key in [
        "a.md",
        "sub/b.txt",
        ".hidden.txt",
        ".git/c.txt",
        "d.txt.part",
        "e.txt~",
        "image.png",
        "dir/",  # a "folder" marker some tools write
    ]:
        _put(client, local_s3.bucket, f"{prefix}/{key}", b"x" if key != "dir/" else b"")
    _put(client, local_s3.bucket, f"{prefix}2/outside.txt", b"a sibling prefix, not below")
    keys = {parse_doc_id(i.doc_id)[1] for i in read_source(uri, label="s", options=options)}
    assert keys == {"a.md", "sub/b.txt"}


def test_one_object_named_by_its_full_key_is_a_source_of_one(local_s3, bucket):
    client, prefix, uri, options = bucket
    _put(client, local_s3.bucket, f"{prefix}/only.txt", b"just this one")
    (doc,) = read_source(f"{uri}/only.txt", label="s", options=options)
    assert isinstance(doc, Document) and doc.doc_id == doc_id_for("s", "only.txt")
    assert doc.text == "just this one"


def test_a_folder_copied_to_a_prefix_reads_to_the_same_documents(local_s3, bucket, tmp_path):
    client, prefix, uri, options = bucket
    folder = tmp_path / "folder"
    files = {
        "paper.pdf": pdf(["Page one text.", "Page two text."], title="Paper"),
        "notes.docx": docx([("heading1", "Notes"), ("p", "A paragraph.")]),
        "page.html": b"<title>T</title><h1>H</h1><p>body</p>",
        "sub/readme.md": b"# Readme\n\nbody",
        "records.jsonl": b'{"_id": "r1", "text": "first"}\n{"_id": "r2", "text": "second"}\n',
    }
    for key, data in files.items():
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        (folder / key).write_bytes(data)
        _put(client, local_s3.bucket, f"{prefix}/{key}", data)

    def by_key(items) -> dict:
        out = {}
        for d in items:
            assert isinstance(d, Document), d
            _source, key, record = parse_doc_id(d.doc_id)
            out[(key, record)] = (d.title, d.text, d.author, d.structure, d.content_hash)
        return out

    local = list(read_source(str(folder), label="same", options=options))
    remote = list(read_source(uri, label="same", options=options))
    assert by_key(remote) == by_key(local) and len(local) == 6
    assert {d.doc_id for d in remote} == {d.doc_id for d in local}  # same label, same ids
    pdf_doc = next(d for d in remote if d.uri.endswith("paper.pdf"))
    assert pdf_doc.uri == f"s3://{local_s3.bucket}/{prefix}/paper.pdf"
    assert pdf_doc.signature.startswith(
        client.head_object(Bucket=local_s3.bucket, Key=f"{prefix}/paper.pdf")["ETag"].strip('"')
    )
    assert all(d.signature == "" for d in local)


def test_an_object_the_store_holds_unchanged_is_not_fetched(local_s3, bucket):
    client, prefix, uri, options = bucket
    for name in ("a.txt", "b.txt", "r.jsonl"):
        body = b'{"_id": "1", "text": "rec"}\n' if name.endswith("jsonl") else name.encode()
        _put(client, local_s3.bucket, f"{prefix}/{name}", body)
    first = list(read_source(uri, label="s", options=options))
    known = {d.doc_id: d.signature for d in first if isinstance(d, Document)}
    _put(client, local_s3.bucket, f"{prefix}/b.txt", b"b changed")
    with local_s3.recording() as seen:
        again = list(read_source(uri, label="s", options=options, known=known))
        lists, gets = _requests(seen)
    kinds = {parse_doc_id(i.doc_id)[1]: type(i).__name__ for i in again}
    # a.txt is as stored; b.txt changed; a records file is always read (its documents may
    # have been committed in several groups, so a signature on some says nothing of all).
    assert kinds == {"a.txt": "Unchanged", "b.txt": "Document", "r.jsonl": "Document"}
    assert (lists, gets) == (1, 2)
    assert isinstance(again[0], Unchanged) and again[0].uri.endswith("/a.txt")


def test_an_object_deleted_between_listing_and_reading_is_quarantined(local_s3, bucket):
    client, prefix, _uri, options = bucket
    _put(client, local_s3.bucket, f"{prefix}/gone.pdf", pdf(["soon gone"]))
    (obj,) = list_objects(client, local_s3.bucket, prefix)
    client.delete_object(Bucket=local_s3.bucket, Key=obj.name)
    (item,) = read_object(client, local_s3.bucket, obj, "s", lambda _d: True, options)
    assert isinstance(item, Quarantined) and item.reason == OBJECT_REMOVED
    assert item.uri == obj.uri and item.doc_id == doc_id_for("s", "gone.pdf")


def test_an_object_over_the_size_limit_is_quarantined_without_a_get(local_s3, bucket):
    client, prefix, uri, _options = bucket
    _put(client, local_s3.bucket, f"{prefix}/big.txt", b"x" * 2000)
    options = ReadOptions(max_file_bytes=1000, storage_options=local_s3.storage_options)
    with local_s3.recording() as seen:
        (item,) = read_source(uri, label="s", options=options)
        assert _requests(seen) == (1, 0)
    assert isinstance(item, Quarantined)
    assert item.reason == (
        "object is 2000 bytes, over the limit of 1000 (CORPUSMILL_MAX_FILE_BYTES)"
    )


def test_hostile_objects_are_quarantined_with_their_reasons_and_the_rest_read(local_s3, bucket):
    client, prefix, uri, options = bucket
    good = pdf(["A good page."])
    objects = {
        "good.pdf": good,
        "good.txt": b"plain",
        "truncated.pdf": good[: len(good) // 2],
        "locked.pdf": pdf(["secret"], user_password="pw"),
        "scan.pdf": pdf(["", ""], image_only=True),
        "fake.docx": b"PK\x03\x04 not really a zip",
        "binary.txt": b"\x00\x01\x02",
    }
    for key, data in objects.items():
        _put(client, local_s3.bucket, f"{prefix}/{key}", data)
    items = list(read_source(uri, label="s", options=options))
    docs = {Path(i.uri).name for i in items if isinstance(i, Document)}
    bad = {Path(i.uri).name: i.reason for i in items if isinstance(i, Quarantined)}
    assert docs == {"good.pdf", "good.txt"}
    assert "unreadable PDF" in bad["truncated.pdf"]
    assert "password" in bad["locked.pdf"]
    assert bad["scan.pdf"].startswith("no text layer")
    assert "zip" in bad["fake.docx"]
    assert "binary" in bad["binary.txt"]


def test_a_bucket_that_does_not_exist_is_an_unavailable_source(local_s3):
    options = ReadOptions(storage_options=local_s3.storage_options)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(read_source("s3://no-such-bucket/prefix", label="s", options=options))


def test_an_unreachable_endpoint_is_an_input_error_naming_the_setting():
    from tools.local_s3 import free_port

    closed = {
        "aws_endpoint": f"http://127.0.0.1:{free_port()}",
        "aws_access_key_id": "k",
        "aws_secret_access_key": "s",
        "region": "us-east-1",
    }
    options = ReadOptions(storage_options=closed)
    with pytest.raises(InputError, match="CORPUSMILL_STORAGE_OPTIONS"):
        list(read_source("s3://bucket/prefix", label="s", options=options))


def test_another_object_store_scheme_is_refused():
    with pytest.raises(InputError, match="only s3://"):
        list(read_source("gs://bucket/prefix", label="s"))
