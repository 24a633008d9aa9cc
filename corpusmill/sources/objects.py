"""Sources in object storage: an `s3://bucket/prefix`, listed page by page, each object
read on its own and handed to the reader of its format (`parse_file`, as a folder's files
are).

- Listing is paginated (1,000 keys a request) and streamed: `list_objects` yields one
  object at a time and keeps nothing, so a bucket of a million objects is never in memory.
  The same names are skipped as in a folder (hidden parts, partial downloads, unsupported
  suffixes: `files.is_candidate`).
- A document's key is the object's key below the prefix, so a folder copied to a bucket
  gives the same document keys (ids differ only by the source label); its uri is the
  object's `s3://` URI.
- An object the store already holds as it is now is not read: a document read from an
  object carries the object's `signature` (its ETag and size, and the readers' version),
  and `read_objects` yields `Unchanged` for an object whose listed signature is the one
  stored. A records file (.jsonl/.parquet) is always read: its documents may be committed
  in several groups, so a signature on some of them says nothing about the rest.
- An object deleted between the listing and the read, one over the size limit, or one the
  credentials may not read is quarantined with its reason; anything else that fails (the
  endpoint, throttling past boto3's retries) fails the run, which is retried whole.

Connection: `ReadOptions.storage_options` (CORPUSMILL_STORAGE_OPTIONS, the store's own)
through `corpusmill.s3.s3_client`; credentials from the standard chain when absent.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import PurePosixPath

from corpusmill.errors import InputError
from corpusmill.ids import content_hash, doc_id_for
from corpusmill.s3 import error_code, s3_client, split_s3_uri
from corpusmill.sources.document import (
    LAYOUT_VERSION,
    OBJECT_REMOVED,
    Document,
    Quarantined,
    Unchanged,
)
from corpusmill.sources.files import (
    RECORD_SUFFIXES,
    Item,
    ReadOptions,
    failure_reason,
    is_candidate,
    parse_file,
    too_large,
)

PAGE_SIZE = 1000  # keys per ListObjectsV2 request: S3's maximum
# Bump when a reader turns the same bytes into another document (text, title, layout): a
# stored object is then read again although its ETag did not move.
READERS_VERSION = "1"
_PARSERS = ("pypdf", "python-docx", "selectolax")
# Per-object failures to quarantine; anything else fails the run (and is retried).
_GONE = {"NoSuchKey", "404"}
_REFUSED = {"AccessDenied", "403", "InvalidObjectState", "KMS.DisabledException"}


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One listed object: its full key, its key below the prefix (the document key), its
    `s3://` URI, ETag and size."""

    name: str
    key: str
    uri: str
    etag: str
    size: int

    @property
    def records(self) -> bool:
        """A .jsonl/.parquet file: many documents, always read."""
        return PurePosixPath(self.key).suffix.lower() in RECORD_SUFFIXES


@functools.cache
def _readers_fingerprint() -> str:
    """The readers' version and the versions of the parsers they use: an upgrade of either
    may change what the same bytes give."""
    versions = []
    for name in _PARSERS:
        try:
            versions.append(metadata.version(name))
        except metadata.PackageNotFoundError:
            versions.append("")
    return content_hash(READERS_VERSION, LAYOUT_VERSION, *versions)[:12]


def signature(etag: str, size: int) -> str:
    """What a stored document keeps of the object it was read from: enough to know, from a
    listing alone, that reading the object again would give the same document."""
    return f"{etag.strip(chr(34))}:{size}:{_readers_fingerprint()}"


def list_objects(client, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
    """The candidate objects under `prefix` (a "folder": `prefix/...`; or, if nothing is
    below it, the one object named `prefix`), page by page, in key order.

    A bucket that does not exist raises FileNotFoundError (the source is unavailable: its
    stored rows are kept); other listing failures raise InputError naming the cause."""
    below = f"{prefix}/" if prefix else ""
    found = False
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=below, PaginationConfig={"PageSize": PAGE_SIZE}
    )
    try:
        for page in pages:
            for entry in page.get("Contents", ()):
                name = entry["Key"]
                found = True
                key = name[len(below) :]
                if is_candidate(key):
                    yield ObjectInfo(
                        name, key, f"s3://{bucket}/{name}", entry["ETag"], int(entry["Size"])
                    )
        if not found and prefix and is_candidate(PurePosixPath(prefix).name):
            head = _head(client, bucket, prefix)
            if head is not None:
                key = PurePosixPath(prefix).name
                yield ObjectInfo(prefix, key, f"s3://{bucket}/{prefix}", *head)
    except Exception as exc:
        raise _listing_error(exc, bucket, prefix) from exc


def _head(client, bucket: str, name: str) -> tuple[str, int] | None:
    try:
        response = client.head_object(Bucket=bucket, Key=name)
    except Exception as exc:
        if error_code(exc) in _GONE:
            return None
        raise
    return response["ETag"], int(response["ContentLength"])


def _listing_error(exc: Exception, bucket: str, prefix: str) -> Exception:
    code = error_code(exc)
    where = f"s3://{bucket}/{prefix}"
    if code == "NoSuchBucket":
        return FileNotFoundError(f"source {where!r}: bucket {bucket!r} does not exist")
    detail = f"{code}: {exc}" if code else f"{type(exc).__name__}: {exc}"
    return InputError(
        f"cannot list {where} ({' '.join(detail.split())[:300]}); check the credentials (the "
        "standard AWS chain) and CORPUSMILL_STORAGE_OPTIONS (endpoint, region)"
    )


def read_object(
    client,
    bucket: str,
    obj: ObjectInfo,
    source: str,
    wanted: Callable[[str], bool],
    options: ReadOptions,
) -> Iterator[Item]:
    """The documents of one object (one, or one per record), or its quarantine records.
    Each document carries the signature of the bytes read (the GET's ETag and length,
    which may be newer than the listing's)."""
    doc_id = doc_id_for(source, obj.key)

    def bad(reason: str) -> Quarantined:
        return Quarantined(doc_id, source, obj.uri, reason)

    if obj.size > options.max_file_bytes:
        yield bad(too_large("object", obj.size, options.max_file_bytes))
        return
    try:
        response = client.get_object(Bucket=bucket, Key=obj.name)
    except Exception as exc:
        code = error_code(exc)
        if code in _GONE:
            yield bad(OBJECT_REMOVED)
            return
        if code in _REFUSED:
            yield bad(f"cannot read the object ({code}: {' '.join(str(exc).split())[:200]})")
            return
        raise
    body = response["Body"]
    try:
        size = int(response["ContentLength"])
        if size > options.max_file_bytes:  # replaced by a larger one since the listing
            yield bad(too_large("object", size, options.max_file_bytes))
            return
        data = body.read()
    except Exception as exc:  # noqa: BLE001 - a connection cut mid-body: this object's
        yield bad(failure_reason("read", exc))
        return
    finally:
        body.close()
    sig = signature(response["ETag"], size)
    for item in parse_file(data, obj.key, obj.uri, source, wanted, options.fields, options.limits):
        yield replace(item, signature=sig) if isinstance(item, Document) else item


def read_objects(
    uri: str,
    wanted: Callable[[str], bool],
    source: str,
    options: ReadOptions,
    known: Mapping[str, str],
) -> Iterator[Item | Unchanged]:
    """Every document under `uri`, object by object as the listing streams in. An object
    whose signature is `known[doc_id]` is not read: `Unchanged`."""
    client = s3_client(options.storage_options)
    bucket, prefix = split_s3_uri(uri)
    for obj in list_objects(client, bucket, prefix):
        if not obj.records:
            doc_id = doc_id_for(source, obj.key)
            if not wanted(doc_id):
                continue
            if known.get(doc_id) == signature(obj.etag, obj.size):
                yield Unchanged(doc_id, obj.uri)
                continue
        yield from read_object(client, bucket, obj, source, wanted, options)
