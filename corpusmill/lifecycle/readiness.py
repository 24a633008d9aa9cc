"""Whether a generation may go live: every shard mirrors `documents`, and its checks pass.

A shard is complete in a generation when the generation's chunks hold every document of the
shard at its current content hash and nothing else, and its embeddings hold each of those
documents at that hash too (a document whose chunks the model could not embed is
quarantined at the generation's embed stage, and counts as done). The checks are the ones
the `embeddings` asset checks run (`store.checks`), over the whole generation, against the
generation's own card. Both are read at promotion time, under the store's lock: a record
from an earlier run would not see a file that arrived since.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from corpusmill.ids import ALL_PARTITIONS
from corpusmill.store import Store, eq_filter
from corpusmill.store.checks import (
    CheckOutcome,
    check_coverage,
    check_model_card,
    check_vectors,
    counted,
    outcomes_record,
)
from corpusmill.store.generations import Generation

Pairs = dict[str, set[tuple[str, str]]]  # shard -> {(doc_id, document content hash)}


@dataclass
class Readiness:
    shards: dict[str, str | None]  # shard -> why it is not complete (None: complete)
    checks: dict[str, CheckOutcome] = field(default_factory=dict)

    @property
    def shards_complete(self) -> int:
        return sum(1 for why in self.shards.values() if why is None)

    @property
    def checks_passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks.values())

    @property
    def ready(self) -> bool:
        return self.shards_complete == len(self.shards) and self.checks_passed

    def reason(self) -> str:
        """Why it is not ready, in one line (empty when it is)."""
        parts = (
            [
                f"{len(self.shards) - self.shards_complete} of {len(self.shards)} shards incomplete "
                f"({', '.join(f'{s}: {w}' for s, w in sorted(self.shards.items()) if w)[:300]})"
            ]
            if self.shards_complete < len(self.shards)
            else []
        )
        parts += [
            f"check {n} failed: {c.description}" for n, c in self.checks.items() if not c.passed
        ]
        return "; ".join(parts)

    def checks_record(self) -> dict:
        """What the registry keeps of the checks (and how many shards were complete)."""
        record = outcomes_record(self.checks, scope="all", by="promotion")
        record["shards_complete"] = self.shards_complete
        return record


def _by_shard(store: Store, table: str, hash_column: str, where: str | None = None) -> Pairs:
    rows = store.scan(table, ["doc_id", hash_column, "partition"], where)
    out: Pairs = defaultdict(set)
    for d, h, p in zip(
        *(rows[c].to_pylist() for c in ("doc_id", hash_column, "partition")), strict=True
    ):
        out[p].add((d, h))
    return out


def shard_status(store: Store, gen: Generation) -> dict[str, str | None]:
    """shard -> None when `gen` mirrors `documents` there, else what is missing."""
    view = gen.view(store)
    docs = _by_shard(store, "documents", "content_hash")
    chunks = _by_shard(view, "chunks", "doc_hash")
    vectors = _by_shard(view, "embeddings", "doc_hash")
    held = set(
        store.scan("quarantine", ["doc_id"], eq_filter("stage", view.stage("embed")))[
            "doc_id"
        ].to_pylist()
    )
    out: dict[str, str | None] = {}
    for shard in ALL_PARTITIONS:
        want = docs.get(shard, set())
        unchunked = len(want - chunks.get(shard, set()))
        extra = len(chunks.get(shard, set()) - want)
        unembedded = sum(1 for d in want - vectors.get(shard, set()) if d[0] not in held)
        stale = len(vectors.get(shard, set()) - want)
        problems = counted(
            (unchunked, "documents not chunked"),
            (extra, "chunked documents gone"),
            (unembedded, "documents not embedded"),
            (stale, "embedded documents gone or changed"),
        )
        out[shard] = ", ".join(problems) or None
    return out


def assess(store: Store, gen: Generation, *, checks: bool = True) -> Readiness:
    """Shards and (unless `checks` is False) the three checks, for the whole generation.
    The checks read every vector, so they run only once every shard is complete."""
    view = gen.view(store)
    readiness = Readiness(shard_status(store, gen))
    if checks and readiness.shards_complete == len(readiness.shards):
        readiness.checks = {
            "vectors_valid": check_vectors(view, gen.card),
            "one_embedding_per_chunk": check_coverage(view),
            "model_card_matches": check_model_card(view, gen.card),
        }
    return readiness
