"""Deterministic identities: content hashes, chunk ids and shard assignment.

Ids never depend on position in a batch or on run order (Dagster's own RAG example uses
`str(i)` per partition, so each partition overwrites the last): the same document always
lands in the same shard and its chunks always get the same ids.
"""

from __future__ import annotations

import hashlib

N_SHARDS = 16


def _digest(data: str, size: int = 16) -> bytes:
    return hashlib.blake2b(data.encode("utf-8", "surrogatepass"), digest_size=size).digest()


def content_hash(*parts: str) -> str:
    """Hash of text content; parts are joined with a separator that text cannot contain."""
    return _digest("\x1f".join(parts)).hex()


def chunk_id(doc_id: str, position: int, chunker_version: str) -> str:
    return _digest(f"{doc_id}\x1f{position}\x1f{chunker_version}").hex()


def escape_part(part: str) -> str:
    """`%` and `#` percent-encoded, so `#` only ever separates the parts of an id."""
    return part.replace("%", "%25").replace("#", "%23")


def _unescape(part: str) -> str:
    return part.replace("%23", "#").replace("%25", "%")


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
