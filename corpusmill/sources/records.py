"""Record files: .jsonl (one JSON object per line) and .parquet, one document per record,
with configurable id/title/text fields (BEIR's `_id`, `title`, `text` by default)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from corpusmill.ids import escape_part, parse_doc_id
from corpusmill.sources.document import Document, Quarantined, make_document


@dataclass(frozen=True)
class RecordFields:
    """Field names for .jsonl/.parquet sources (BEIR uses `_id`, `title`, `text`)."""

    id: str = "_id"
    text: str = "text"
    title: str = "title"


Item = Document | Quarantined


def _record(
    rec: dict, n: int, key: str, uri: str, source: str, fields: RecordFields
) -> Document | str:
    if not isinstance(rec, dict):
        return f"record {n} is not an object"
    rid = rec.get(fields.id, rec.get("id"))
    text = rec.get(fields.text)
    if rid is None or str(rid) == "":
        return f"record {n} has no '{fields.id}' field"
    if not isinstance(text, str) or not text.strip():
        return f"record {n} has no text in '{fields.text}'"
    title = rec.get(fields.title) or ""
    rid = str(rid)
    return make_document(
        source, key, f"{uri}#{escape_part(rid)}", str(title).strip(), text.strip(), record=rid
    )


def _records(rows: Iterable[tuple[int, object]], key, uri, source, wanted, fields, bad):
    """Documents of a record file's (line number, parsed record or error) pairs.

    A record id seen twice in one file keeps its first record; every later one is
    quarantined with the line that holds the kept one, never dropped without a word.
    """
    first: dict[str, int] = {}
    file_id = bad("").doc_id
    for n, rec in rows:
        result = rec if isinstance(rec, str) else _record(rec, n, key, uri, source, fields)  # type: ignore[arg-type]
        if isinstance(result, str):
            yield Quarantined(f"{file_id}:{n}", source, f"{uri}:{n}", result)
            continue
        if result.doc_id in first:
            rid = parse_doc_id(result.doc_id)[2]
            yield Quarantined(
                result.doc_id,
                source,
                f"{uri}:{n}",
                f"duplicate record id {rid!r}: record {first[result.doc_id]} has it too "
                "and is the one kept",
            )
            continue
        first[result.doc_id] = n
        if wanted(result.doc_id):
            yield result


def jsonl_records(text, key, uri, source, wanted, fields, bad) -> Iterator[Item]:
    def rows():
        # "\n" only: str.splitlines also splits at U+2028 and other characters JSON
        # strings may hold raw, which cut one record in two.
        for n, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as exc:
                yield n, f"line {n}: invalid JSON ({exc.msg})"
            except RecursionError:  # deeply nested brackets: json recurses per level
                yield n, f"line {n}: invalid JSON (nested too deeply)"

    yield from _records(rows(), key, uri, source, wanted, fields, bad)


def parquet_records(data: bytes, key, uri, source, wanted, fields, bad) -> Iterator[Item]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        yield bad(f"unreadable parquet: {exc}")
        return
    rows = enumerate(table.to_pylist(), start=1)
    yield from _records(rows, key, uri, source, wanted, fields, bad)
