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


def doc_id_for(source: str, key: str) -> str:
    """`source#key`: the source label (`pydoc`, `inbox`, or an absolute path) and the
    document's key inside it (a relative path, a record id, a topic name)."""
    return f"{source}#{key}"


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
