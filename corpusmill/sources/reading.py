"""One source of any kind, read into documents: `pydoc`, a path (a folder or one file), or
an object-store prefix (`s3://bucket/prefix`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from corpusmill.errors import InputError
from corpusmill.sources.document import Unchanged
from corpusmill.sources.files import (
    DEFAULT_OPTIONS,
    OBJECT_SCHEMES,
    PYDOC,
    Item,
    ReadOptions,
    is_object_uri,
    read_path,
    read_pydoc,
    source_label,
)
from corpusmill.sources.objects import read_objects


def read_source(
    spec: str,
    wanted=lambda _id: True,
    *,
    label: str | None = None,
    options: ReadOptions = DEFAULT_OPTIONS,
    known: Mapping[str, str] | None = None,
    key: str | None = None,
) -> Iterator[Item | Unchanged]:
    """All documents of one source. `label` overrides the source name (e.g. `inbox`);
    `wanted(doc_id)` picks the documents of the caller's shards (other files stay shut).

    `known` (doc id -> the signature its stored row carries) lets an object store skip
    reading an object the store already holds as it is now: `Unchanged` stands for it.
    A source that does not exist raises FileNotFoundError before anything is yielded.
    `key`: the key one file's documents take (default: its name)."""
    if spec == PYDOC:
        yield from read_pydoc(wanted)
    elif is_object_uri(spec):
        yield from read_objects(spec, wanted, label or source_label(spec), options, known or {})
    elif "://" in spec:
        raise InputError(
            f"source {spec!r}: only {', '.join(OBJECT_SCHEMES)} object stores can be read"
        )
    else:
        yield from read_path(spec, wanted, label=label, options=options, key=key)
