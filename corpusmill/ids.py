"""Deterministic identities: content hashes, chunk ids and shard assignment.

Ids never depend on position in a batch or on run order (Dagster's own RAG example uses
`str(i)` per partition, so each partition overwrites the last): the same document always
lands in the same shard and its chunks always get the same ids.
"""

from __future__ import annotations

import hashlib
import re

N_SHARDS = 16


def _digest(data: str, size: int = 16) -> bytes:
    return hashlib.blake2b(data.encode("utf-8", "surrogatepass"), digest_size=size).digest()


def content_hash(*parts: str) -> str:
    """Hash of text content; parts are joined with a separator that text cannot contain."""
    return _digest("\x1f".join(parts)).hex()


def chunk_id(doc_id: str, position: int, chunker_version: str) -> str:
    return _digest(f"{doc_id}\x1f{position}\x1f{chunker_version}").hex()


# Characters an id part cannot hold as they are: `%` and `#` (the escape and the separator)
# and lone surrogates. A file name that is not valid UTF-8 reaches Python with each bad
# byte as a surrogate (U+DC80-U+DCFF, PEP 383); Arrow cannot write those, so they would
# stop a run. Each becomes `%XX` (the byte), any other lone surrogate `%uXXXX`: lossless,
# and ids written before (which only ever held `%25` and `%23`) read back unchanged.
_ESCAPED = re.compile("[%#\ud800-\udfff]")
_ESCAPE = re.compile("%(u[0-9A-F]{4}|[0-9A-F]{2})")


def _escape_char(m: re.Match) -> str:
    code = ord(m.group())
    if 0xDC80 <= code <= 0xDCFF:
        return f"%{code - 0xDC00:02X}"
    return f"%{code:02X}" if code < 0x80 else f"%u{code:04X}"


def _unescape_char(m: re.Match) -> str:
    code = m.group(1)
    if code.startswith("u"):
        return chr(int(code[1:], 16))
    value = int(code, 16)
    return chr(value) if value < 0x80 else chr(0xDC00 + value)


def escape_part(part: str) -> str:
    """`%` and `#` percent-encoded, so `#` only ever separates the parts of an id; the
    undecodable bytes of a file name (and any lone surrogate) too, so every id is valid
    UTF-8 and `parse_doc_id` gives the name back exactly."""
    return _ESCAPED.sub(_escape_char, part)


def _unescape(part: str) -> str:
    return _ESCAPE.sub(_unescape_char, part)


def display_name(name: str) -> str:
    """A path or name as valid UTF-8 text for a `uri` column and messages: each byte of
    it that is not UTF-8 as `\\xff` (as `ls -b` shows it), another lone surrogate as
    U+FFFD. The id (`escape_part`), not this, is the lossless form."""
    if not _SURROGATE.search(name):
        return name
    return _SURROGATE.sub(
        lambda m: (
            f"\\x{ord(m.group()) - 0xDC00:02x}" if 0xDC80 <= ord(m.group()) <= 0xDCFF else "\ufffd"
        ),
        name,
    )


_SURROGATE = re.compile("[\ud800-\udfff]")


def doc_id_for(source: str, key: str) -> str:
    """`source#key` for a whole file or a pydoc topic: the source label (`pydoc`, `inbox`,
    an absolute path) and the file's relative path (or the topic name) inside it."""
    return f"{escape_part(source)}#{escape_part(key)}"


def record_id_for(source: str, file_key: str, record: str) -> str:
    """`source#file#record` for one record of a .jsonl/.parquet file.

    Files and records are two kinds of input: a record's id has three parts, a file's two,
    and `#` inside a part is escaped, so no record can take a file's id, and the same
    record id in two files gives two documents (issue 15: they used to share
    `source#key`, and one silently replaced the other). Ids written before this scheme
    (`source#record`) are re-keyed by the next run over all shards: see docs/RELIABILITY.md.
    """
    return f"{escape_part(source)}#{escape_part(file_key)}#{escape_part(record)}"


def parse_doc_id(doc_id: str) -> tuple[str, str, str | None]:
    """(source, key, record or None): the inverse of `doc_id_for` / `record_id_for`."""
    parts = doc_id.split("#")
    if len(parts) == 2:
        return _unescape(parts[0]), _unescape(parts[1]), None
    if len(parts) == 3:
        return _unescape(parts[0]), _unescape(parts[1]), _unescape(parts[2])
    raise ValueError(f"not a corpusmill document id: {doc_id!r}")


def doc_key(doc_id: str) -> str:
    """Hex digest of a document id. Write-path filters name documents by this key, never
    by the id itself: ids come from file names, and lancedb 0.40's `Expr.to_sql` does not
    double a quote that follows a backslash, so a file named `it\\'s.txt` would end the
    literal early (an injection, not just an error). Hex cannot."""
    return _digest(doc_id).hex()


def shard_of(doc_id: str, n_shards: int = N_SHARDS) -> int:
    return int.from_bytes(_digest(doc_id, 8), "big") % n_shards


def partition_key(shard: int) -> str:
    return f"shard-{shard:02d}"


def partition_of(doc_id: str, n_shards: int = N_SHARDS) -> str:
    return partition_key(shard_of(doc_id, n_shards))


ALL_PARTITIONS = [partition_key(i) for i in range(N_SHARDS)]
