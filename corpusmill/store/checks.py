"""Checks on the embeddings table: what the Dagster asset checks report (no Dagster here).

Each check reads the table and returns a `CheckOutcome` (passed, a one-line why, numeric
figures), so a failure says what is wrong and how much of it. Given `partitions` (a run's
shards), the row checks read only those shards' rows: another run writing other shards of
the same table at the same time has its chunks committed before its vectors, and a check
over the whole table would fail on that run's half-written shards. Without `partitions`
(a check run on its own, outside a partitioned run) they cover the whole table.
    vectors      every vector finite, of the model's dimension, and unit length when the
                 model normalises (else non-zero)
    coverage     one embedding per current chunk (same id and content), no duplicate ids
    model card   the table's card (id, revision, dimension, pooling, normalisation) is the
                 configured model's
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from corpusmill.model.card import ModelCard
from corpusmill.store.predicates import all_of, eq_filter, in_filter
from corpusmill.store.schemas import table_card
from corpusmill.store.store import Store

NORM_TOLERANCE = 1e-3  # float32 rows normalised in float32: |norm - 1| is ~1e-7 in practice
BATCH_ROWS = 8192  # vectors are read in batches, so memory stays flat on a large table
NOT_FINITE = "the vector is not finite (NaN or infinity)"
NAMED_ROWS = 5  # a failed vector check names this many of the rows it found


@dataclass
class VectorFaults:
    """Per row of a matrix of vectors: what is wrong with it, if anything."""

    non_finite: np.ndarray  # bool: a NaN or an infinity
    bad_norm: np.ndarray  # bool: finite, but not unit length (normalising model) or zero
    norms: np.ndarray  # the finite rows' norms, in order


def vector_faults(
    vectors: np.ndarray, card: ModelCard, tolerance: float = NORM_TOLERANCE
) -> VectorFaults:
    """The rule a vector of `card`'s model keeps, for the asset check (`check_vectors`) and
    the embeddings step alike (a new vector, and a stored one before it is reused): finite,
    and unit norm within `tolerance` when the model normalises, else non-zero. `vectors`
    is (rows, card.dimension)."""
    finite = np.isfinite(vectors).all(axis=1)
    # In float64: a damaged float32 row (entries near 1e33) would overflow a float32 norm.
    norms = np.linalg.norm(vectors[finite].astype(np.float64), axis=1)
    bad = np.abs(norms - 1.0) > tolerance if card.normalize else norms == 0.0
    bad_norm = np.zeros(len(vectors), dtype=bool)
    bad_norm[finite] = bad
    return VectorFaults(~finite, bad_norm, norms)


def fault_reasons(
    faults: VectorFaults, card: ModelCard, non_finite_reason: str = NOT_FINITE
) -> list[str | None]:
    """Per row, why the vector cannot stand for its chunk (None: it can), in words."""
    norms = iter(faults.norms.tolist())
    out: list[str | None] = []
    pairs = zip(faults.non_finite.tolist(), faults.bad_norm.tolist(), strict=True)
    for non_finite, bad_norm in pairs:
        norm = None if non_finite else next(norms)
        if non_finite:
            out.append(non_finite_reason)
        elif bad_norm and card.normalize:
            out.append(f"the vector's norm is {norm:.4g}, not 1 (the model normalises)")
        elif bad_norm:
            out.append("the vector is zero")
        else:
            out.append(None)
    return out


@dataclass(frozen=True)
class DamagedRow:
    """A stored vector that fails `vector_faults`: which chunk, and why."""

    chunk_id: str
    doc_id: str
    content_hash: str
    reason: str


def _vector_batches(table, columns: Sequence[str], where: str | None, dimension: int):
    """(batch, vectors, usable) per batch of `columns` + vector: `vectors` is the rows of
    `dimension` as a float32 matrix, `usable` the mask of those rows in the batch (a null or
    wrongly sized vector is not usable). Batched, so memory stays flat on a large table."""
    query = table.search().select([*columns, "vector"])
    if where:
        query = query.where(where)
    for batch in query.limit(None).to_batches(BATCH_ROWS):
        column = batch.column("vector")
        lengths = pa.compute.list_value_length(column).fill_null(-1).to_numpy(zero_copy_only=False)
        usable = lengths == dimension
        kept = column.filter(pa.array(usable))
        flat = kept.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        yield batch, flat.reshape(len(kept), dimension), usable


def damaged_vectors(
    store: Store, card: ModelCard, where: str | None = None, tolerance: float = NORM_TOLERANCE
) -> list[DamagedRow]:
    """Every row of `embeddings` (matching `where`) whose vector fails the rule a vector of
    `card`'s model keeps (`vector_faults`), or is missing or of another dimension: damage
    (a flipped bit, a bad disk) that the embeddings step must not keep or reuse."""
    table = store.open("embeddings")
    if table is None:
        return []
    found: list[DamagedRow] = []
    columns = ["chunk_id", "doc_id", "content_hash"]
    for batch, vectors, usable in _vector_batches(table, columns, where, card.dimension):
        reasons: list[str | None] = [f"the vector is not {card.dimension}-d"] * len(batch)
        said = fault_reasons(vector_faults(vectors, card, tolerance), card)
        for i, reason in zip(np.flatnonzero(usable).tolist(), said, strict=True):
            reasons[i] = reason
        ids = [batch.column(c).to_pylist() for c in columns]
        for (chunk, doc, digest), reason in zip(zip(*ids, strict=True), reasons, strict=True):
            if reason is not None:
                found.append(DamagedRow(chunk, doc, digest, reason))
    return found


@dataclass
class CheckOutcome:
    passed: bool
    description: str
    metadata: dict[str, float | int | str] = field(default_factory=dict)


def outcomes_record(
    outcomes: Mapping[str, CheckOutcome], *, scope: str | int, by: str
) -> dict[str, object]:
    """What a generation's registry row keeps of one evaluation of the checks: each
    outcome, whether all passed, over which shards ("all" or how many), when, by whom."""
    import datetime as dt

    return {
        "passed": bool(outcomes) and all(o.passed for o in outcomes.values()),
        "results": {
            name: {"passed": o.passed, "description": o.description} for name, o in outcomes.items()
        },
        "shards_checked": scope,
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "by": by,
    }


def counted(*pairs: tuple[int, str]) -> list[str]:
    """ "N what" for each (N, what) with N > 0: a check's problems, in one line each."""
    return [f"{n} {what}" for n, what in pairs if n]


def _missing(name: str) -> CheckOutcome:
    return CheckOutcome(False, f"no {name} table yet: materialise the assets first")


def _shards(partitions: Sequence[str] | None) -> str | None:
    """The filter for `partitions`' rows; None (every row) when no partitions are given."""
    return None if partitions is None else in_filter("partition", sorted(set(partitions)))


def _scope(meta: dict[str, float | int | str], partitions: Sequence[str] | None) -> None:
    meta["shards_checked"] = "all" if partitions is None else len(set(partitions))


def check_vectors(
    store: Store,
    card: ModelCard,
    tolerance: float = NORM_TOLERANCE,
    partitions: Sequence[str] | None = None,
) -> CheckOutcome:
    """Finite, `card.dimension` long, and unit norm if `card.normalize` (else non-zero);
    of `partitions`' rows only when given."""
    table = store.open("embeddings")
    if table is None:
        return _missing("embeddings")
    vector_type = table.schema.field("vector").type
    stored_dim = getattr(vector_type, "list_size", -1)
    rows = non_finite = wrong_dim = bad_norm = 0
    lo, hi = np.inf, 0.0
    named: list[str] = []  # the first damaged rows' chunk ids, for the description
    for batch, vectors, usable in _vector_batches(
        table, ["chunk_id"], _shards(partitions), card.dimension
    ):
        rows += len(batch)
        wrong_dim += int(np.count_nonzero(~usable))
        faults = vector_faults(vectors, card, tolerance)
        non_finite += int(np.count_nonzero(faults.non_finite))
        bad_norm += int(np.count_nonzero(faults.bad_norm))
        bad = ~usable
        bad[usable] = faults.non_finite | faults.bad_norm
        if len(named) < NAMED_ROWS and bad.any():
            ids = batch.column("chunk_id").to_pylist()
            named += [ids[i] for i in np.flatnonzero(bad)[: NAMED_ROWS - len(named)]]
        if faults.norms.size:
            lo = min(lo, float(faults.norms.min()))
            hi = max(hi, float(faults.norms.max()))
    meta: dict[str, float | int | str] = {
        "rows": rows,
        "non_finite_vectors": non_finite,
        "wrong_dimension_vectors": wrong_dim,
        "bad_norm_vectors": bad_norm,
        "expected_dimension": card.dimension,
        "stored_dimension": int(stored_dim),
        "normalised": str(card.normalize).lower(),
    }
    _scope(meta, partitions)
    if rows and np.isfinite(lo):
        meta["min_norm"], meta["max_norm"] = round(lo, 6), round(hi, 6)
    problems = []
    if stored_dim != card.dimension or wrong_dim:
        problems.append(
            f"{wrong_dim} vectors (column: {stored_dim}) not of dimension {card.dimension}"
        )
    if non_finite:
        problems.append(f"{non_finite} vectors with NaN or inf")
    if bad_norm:
        want = f"unit length (±{tolerance})" if card.normalize else "non-zero"
        problems.append(f"{bad_norm} vectors not {want}")
    if problems:
        meta["damaged_chunk_ids"] = ", ".join(named)
        said = "; ".join(problems) + (f" (e.g. {', '.join(named)})" if named else "")
        if non_finite or bad_norm:
            said += "; the next ingest embeds them again"
        return CheckOutcome(False, said, meta)
    norm = "unit length" if card.normalize else "non-zero"
    return CheckOutcome(True, f"{rows} vectors finite, {card.dimension}-d, {norm}", meta)


def check_coverage(store: Store, partitions: Sequence[str] | None = None) -> CheckOutcome:
    """One embedding per current chunk (same chunk id and content hash), no duplicate ids;
    over `partitions`' rows only when given (a chunk and its embedding share the shard).
    Chunks of documents the embed stage quarantined (a non-finite vector, an input too large
    for the device) have no embedding on purpose: they are counted apart, not as missing."""
    if store.open("chunks") is None:
        return _missing("chunks")
    if store.open("embeddings") is None:
        return _missing("embeddings")
    where = _shards(partitions)
    chunks = store.scan("chunks", ["chunk_id", "content_hash", "doc_id"], where)
    quarantined_at_embed = all_of(eq_filter("stage", "embed"), where or "")
    held = set(store.scan("quarantine", ["doc_id"], quarantined_at_embed)["doc_id"].to_pylist())
    emb = store.scan("embeddings", ["chunk_id", "content_hash"], where)
    want = dict(zip(*(chunks[c].to_pylist() for c in ("chunk_id", "content_hash")), strict=True))
    ids = emb["chunk_id"].to_pylist()
    have = dict(zip(ids, emb["content_hash"].to_pylist(), strict=True))
    duplicates = sum(n - 1 for n in Counter(ids).values() if n > 1)
    doc_of = dict(zip(chunks["chunk_id"].to_pylist(), chunks["doc_id"].to_pylist(), strict=True))
    quarantined = sum(1 for c in want if c not in have and doc_of[c] in held)
    missing = sum(1 for c in want if c not in have) - quarantined
    orphans = sum(1 for c in have if c not in want)
    outdated = sum(1 for c, h in have.items() if c in want and want[c] != h)
    meta: dict[str, float | int | str] = {
        "chunks": len(want),
        "embeddings": len(ids),
        "missing": missing,
        "quarantined_at_embed": quarantined,
        "orphaned": orphans,
        "outdated": outdated,
        "duplicate_ids": duplicates,
    }
    _scope(meta, partitions)
    problems = counted(
        (missing, "chunks without an embedding"),
        (orphans, "embeddings of chunks that no longer exist"),
        (outdated, "embeddings of an older content of their chunk"),
        (duplicates, "duplicate chunk ids"),
    )
    if problems:
        return CheckOutcome(False, "; ".join(problems), meta)
    return CheckOutcome(True, f"{len(ids)} embeddings, one per current chunk", meta)


def check_model_card(store: Store, card: ModelCard) -> CheckOutcome:
    """The table's card is the configured model's, field by field."""
    table = store.open("embeddings")
    if table is None:
        return _missing("embeddings")
    stored = table_card(table.schema)
    expected = card.as_metadata()
    diffs = {k: (stored.get(k), v) for k, v in expected.items() if stored.get(k) != v}
    meta: dict[str, float | int | str] = {f"table_{k}": stored.get(k, "") for k in expected}
    meta.update({f"configured_{k}": v for k, v in expected.items()})
    if diffs:
        said = "; ".join(f"{k}: table {a!r}, configured {b!r}" for k, (a, b) in diffs.items())
        return CheckOutcome(
            False,
            f"the table was written by another model ({said}): set CORPUSMILL_MODEL to the "
            "model that wrote it, or point CORPUSMILL_DB at a new directory and re-ingest",
            meta,
        )
    return CheckOutcome(True, f"written by {card.model_id} @ {card.revision}", meta)
