"""The embeddings step's rules, per document and per chunk, for both of its paths.

In-process (`sync.embeddings`: the engine streams, document groups commit by merge-insert)
and on Ray (`scale`: workers write fragments, the driver commits once) differ only in where
a batch of chunks runs and how its rows reach the table. What happens to each document and
chunk is decided here, once:

- `Changes`: which documents are stale (their chunk set differs from what `embeddings`
  holds) or gone (`embeddings` holds them, `chunks` no longer does), and the report's
  counts that follow from that;
- `EmbedRules.check_vectors`: whether a vector can stand for its chunk (finite, the model's
  dimension, unit norm when the model normalises): the same test for the engine's new
  vectors and for a stored vector about to be reused (`stored_vectors`);
- `ChunkBatch`: which chunk takes a stored vector of the same content and which goes to
  the engine, as the token ids the chunker stored (when this embedder's tokenizer made
  them) or as text; then which vectors are kept and which chunks are quarantined (with
  their reason and `uri#chunkN` label); then the `embeddings` rows to write.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass, field

import numpy as np
import pyarrow as pa

from corpusmill.engine.inputs import TokenIds
from corpusmill.model.card import ModelCard
from corpusmill.sources import Quarantined
from corpusmill.store import Store, chunks_schema, embeddings_schema, groups_of, in_filter
from corpusmill.store.checks import DamagedRow, damaged_vectors, fault_reasons, vector_faults
from corpusmill.sync.scope import Report, detail

DAMAGE_SAMPLE = 5  # damaged rows a report names
NON_FINITE = "the model returned a non-finite vector (NaN or infinity) for this chunk"

# What a document's chunk set is read from. The document's hash is part of it: a document
# whose layout (pages, headings) changed has the same chunk texts but new locations, and
# its rows here are rewritten (vectors reused by content hash), carrying its new hash.
CHUNK_SET = ["chunk_id", "doc_id", "content_hash", "doc_hash"]
STORED_IDS = ("input_ids", "tokenizer")  # the chunker's token ids: they stay in `chunks`
_CHUNK_COLUMNS = [f.name for f in chunks_schema()]

ChunkSets = dict[str, set[tuple[str, str, str]]]  # doc_id -> {(chunk_id, content_hash, doc_hash)}
Item = tuple[str, str | TokenIds]  # (chunk_id, what the engine embeds)


@dataclass
class Outcome:
    """What became of a batch's chunks that went to the engine: embedded (per partition) or
    quarantined. JSON travels from a Ray worker back to its driver."""

    embedded: Counter[str] = field(default_factory=Counter)
    failed: list[Quarantined] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {"embedded": dict(self.embedded), "failed": [astuple(q) for q in self.failed]}
        )

    @classmethod
    def from_json(cls, text: str) -> Outcome:
        data = json.loads(text)
        return cls(Counter(data["embedded"]), [Quarantined(*q) for q in data["failed"]])


@dataclass
class EmbeddingsReport(Report):
    rows: int = 0
    documents_updated: int = 0
    documents_removed: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    chunks_failed: int = 0
    chunks_to_embed: int = 0  # known before embedding starts: the progress total
    vectors_damaged: int = 0  # stored vectors that failed the rule, found by this run
    vectors_repaired: int = 0  # of those, rows that now hold a good vector
    vectors_damaged_sample: str = ""  # the first few: "chunk id: why"
    sync_seconds: float = 0.0
    failed: list[Quarantined] = detail(list)  # chunks quarantined at the embed stage
    embedded_by_partition: Counter[str] = detail(Counter)

    def add(self, outcome: Outcome) -> None:
        self.chunks_embedded += sum(outcome.embedded.values())
        self.embedded_by_partition.update(outcome.embedded)
        self.chunks_failed += len(outcome.failed)
        self.failed.extend(outcome.failed)


def chunk_sets(ids: pa.Table) -> ChunkSets:
    """What each document consists of, from a scan of the `CHUNK_SET` columns."""
    by_doc: ChunkSets = defaultdict(set)
    columns = (ids[k].to_pylist() for k in CHUNK_SET)
    for chunk, doc, digest, doc_hash in zip(*columns, strict=True):
        by_doc[doc].add((chunk, digest, doc_hash))
    return by_doc


@dataclass
class Changes:
    """What the step must write for a set of partitions: `want` is what `chunks` holds."""

    want: ChunkSets
    stale: list[str]  # documents whose chunks differ from their rows in `embeddings`
    gone: list[str]  # documents `embeddings` holds and `chunks` no longer does
    known: set[str]  # content hashes with a stored vector anywhere in `embeddings`
    # Stored vectors of wanted documents that fail the vector rule (damage: a flipped bit,
    # a bad disk): their documents are stale, their vectors never reused, so a rerun heals.
    damaged: list[DamagedRow] = field(default_factory=list)
    card: ModelCard | None = None
    held: list[str] = field(default_factory=list)  # stale documents with rows in `embeddings`

    @property
    def replaced(self) -> list[str]:
        """Documents whose rows in `embeddings` the step deletes: the stale ones it holds
        rows of, and the gone ones (a stale document without rows has nothing to delete)."""
        return sorted(self.held + self.gone)

    @classmethod
    def against(
        cls,
        store: Store,
        want: ChunkSets,
        where: str,
        card: ModelCard | None = None,
        known: Callable[[set[str]], set[str]] | None = None,
    ) -> Changes:
        """`want` compared with what `embeddings` holds under the partition filter `where`;
        with `card`, every stored vector there is checked as well (`damaged_vectors`).
        `known`: which of the given content hashes have a stored vector (default: every
        hash `embeddings` holds is read; a driver that must not hold them all passes
        `known_among` over a stream)."""
        have = chunk_sets(store.scan("embeddings", CHUNK_SET, where))
        damaged = [] if card is None else damaged_vectors(store, card, where)
        damaged = [d for d in damaged if d.doc_id in want]
        hurt = {d.doc_id for d in damaged}
        stale = sorted(d for d in want if want[d] != have.get(d) or d in hurt)
        if known is None:
            hashes = store.scan("embeddings", ["content_hash"])["content_hash"].to_pylist()
            found = set(hashes)
        else:
            found = known({h for d in stale for _c, h, _d in want[d]})
        return cls(
            want=want,
            stale=stale,
            gone=sorted(d for d in have if d not in want),
            known=found - {d.content_hash for d in damaged},
            damaged=damaged,
            card=card,
            held=[d for d in stale if d in have],
        )

    @property
    def wanted(self) -> int:
        """Chunks the partitions should hold."""
        return sum(len(v) for v in self.want.values())

    @property
    def to_embed(self) -> int:
        """Chunks of stale documents whose content no stored vector has."""
        return sum(1 for d in self.stale for _c, h, _d in self.want[d] if h not in self.known)

    def report(self) -> EmbeddingsReport:
        sample = "; ".join(f"{d.chunk_id}: {d.reason}" for d in self.damaged[:DAMAGE_SAMPLE])
        return EmbeddingsReport(
            documents_updated=len(self.stale),
            documents_removed=len(self.gone),
            chunks_to_embed=self.to_embed,
            vectors_damaged=len(self.damaged),
            vectors_damaged_sample=sample,
        )

    def settle(self, report: EmbeddingsReport, store: Store | None = None) -> None:
        """Once every batch is in: reused = every wanted chunk whose vector was already
        stored (unchanged, or the same content elsewhere); repaired = the damaged rows that
        now hold a vector that passes the rule (read back from `store`)."""
        report.chunks_reused = self.wanted - report.chunks_embedded - report.chunks_failed
        if store is not None and self.card is not None:
            report.vectors_repaired += count_repaired(store, self.card, self.damaged)


def count_repaired(store: Store, card: ModelCard, damaged: Sequence[DamagedRow]) -> int:
    """Of the `damaged` rows, how many now hold a vector that passes the rule (read back
    once their documents were embedded again)."""
    repaired = 0
    for group in groups_of(sorted({d.chunk_id for d in damaged})):
        where = in_filter("chunk_id", group)
        repaired += store.count("embeddings", where) - len(damaged_vectors(store, card, where))
    return repaired


def known_among(hashes: set[str], stored: Iterable[pa.RecordBatch]) -> set[str]:
    """Which of `hashes` have a stored vector, from a stream of `content_hash` batches of
    `embeddings`: what `Changes.against` is given by a driver that holds one slice of the
    run, never every stored hash."""
    found: set[str] = set()
    if not hashes:
        return found
    for batch in stored:
        found.update(h for h in batch.column("content_hash").to_pylist() if h in hashes)
    return found


def chunk_columns(present: Iterable[str]) -> list[str]:
    """The chunk columns to read: a chunks table from before stored ids lacks those until
    it is next synced."""
    have = set(present)
    return [c for c in _CHUNK_COLUMNS if c in have]


@dataclass(frozen=True)
class EmbedRules:
    """The per-chunk rules for one embedder (its card and tokenizer fingerprint). Picklable:
    a Ray worker applies the very same ones."""

    card: ModelCard
    tokenizer_id: str = ""  # "": never trust stored ids

    def check_vectors(self, vectors: np.ndarray) -> list[str | None]:
        """Per row of `vectors`, why it cannot stand for its chunk (None: it can): the
        store's rule for a vector of this model (`store.checks.vector_faults`, the one the
        asset check applies to the table), and the model's dimension."""
        rows = np.asarray(vectors, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.card.dimension:
            width = rows.shape[1] if rows.ndim == 2 else rows.size
            reason = f"the vector has {width} dimensions, the model {self.card.dimension}"
            return [reason] * len(rows)
        return fault_reasons(vector_faults(rows, self.card), self.card, NON_FINITE)

    def verdicts(self, vectors: np.ndarray, failed: Mapping[int, str]) -> list[str | None]:
        """Per row the engine returned: its own failure (an input too large for the device
        even alone), else what `check_vectors` finds, else None (keep it)."""
        problems = self.check_vectors(vectors)
        return [failed.get(i) or problem for i, problem in enumerate(problems)]

    def engine_inputs(self, chunks: pa.Table) -> list[str | TokenIds]:
        """Per chunk row, the chunk as the engine takes it: the ids the chunker stored when
        this embedder's tokenizer made them, the text otherwise (another model, an edited
        vocabulary, a table from before the column: a stale id is never trusted). Read
        column-wise: the stored ids are views into one array (never a Python int per token:
        1.3-1.6x the host side's tokens/s, `make bench-host-feed`), the text is read only
        for the rows that need it."""
        n, names = chunks.num_rows, set(chunks.column_names)
        trusted = np.zeros(n, dtype=bool)
        if self.tokenizer_id and {"input_ids", "tokenizer"} <= names and n:
            ids = chunks["input_ids"].combine_chunks()
            made_by = chunks["tokenizer"].to_numpy(zero_copy_only=False)
            trusted = (made_by == self.tokenizer_id) & ~ids.is_null().to_numpy(zero_copy_only=False)
        out: list[str | TokenIds] = [""] * n
        if trusted.any():
            offsets = ids.offsets.to_numpy()
            values = ids.values.to_numpy(zero_copy_only=False)
            for i in np.flatnonzero(trusted).tolist():
                out[i] = TokenIds(values[offsets[i] : offsets[i + 1]])
        if not trusted.all():
            rest = np.flatnonzero(~trusted)
            for i, text in zip(rest.tolist(), chunks["text"].take(rest).to_pylist(), strict=True):
                out[i] = text
        return out

    @staticmethod
    def quarantined(row: Mapping, reason: str) -> Quarantined:
        """A chunk that stays out of the table, named `uri#chunkN`."""
        return Quarantined(
            row["doc_id"], row["source"], f"{row['uri']}#chunk{row['position']}", reason
        )

    def rows_table(self, chunks: pa.Table, vectors: np.ndarray) -> pa.Table:
        """`embeddings` rows, column by column: each chunk's columns, its vector (row i of
        `vectors`), the model id."""
        schema = embeddings_schema(self.card).remove_metadata()
        n, dim = chunks.num_rows, self.card.dimension
        flat = np.ascontiguousarray(vectors, dtype=np.float32).reshape(n * dim)
        columns = []
        for f in schema:
            if f.name == "vector":
                columns.append(pa.FixedSizeListArray.from_arrays(pa.array(flat), dim))
            elif f.name == "model_id":
                columns.append(pa.array([self.card.model_id] * n, pa.string()))
            elif f.name in chunks.column_names:
                columns.append(chunks[f.name].cast(f.type))
            else:
                columns.append(pa.nulls(n, f.type))
        return pa.Table.from_arrays(columns, schema=schema)


ScanIn = Callable[[Sequence[str], str, Sequence[str]], pa.Table]  # (columns, column, values)


def stored_vectors(
    scan_in: ScanIn, hashes: Iterable[str], rules: EmbedRules
) -> dict[str, np.ndarray]:
    """content hash -> a stored vector that passes `check_vectors`, read with `scan_in` from
    `embeddings` (the latest version in-process, the planned one on a Ray worker). A
    damaged one is not reused: its chunk is embedded again."""
    wanted = sorted(set(hashes))
    if not wanted:
        return {}
    found = scan_in(["content_hash", "vector"], "content_hash", wanted)
    if found.num_rows == 0:
        return {}
    vectors = found.column("vector").combine_chunks()
    matrix = vectors.values.to_numpy(zero_copy_only=False).reshape(len(vectors), -1)
    problems = rules.check_vectors(matrix)
    digests = found.column("content_hash").to_pylist()
    return {h: v for h, v, p in zip(digests, matrix, problems, strict=True) if p is None}


class ChunkBatch:
    """Chunk rows on their way to `embeddings`, held as columns.

    Built from the rows (an Arrow table as read from `chunks`) and the stored vectors
    their contents have: a chunk with one takes it; the others wait in `todo` as
    (chunk_id, text or TokenIds) items for the engine. `take_rows` hands in the engine's
    rows; when nothing waits, `table()` is the rows to write and `outcome` what became of
    the embedded ones.
    """

    def __init__(
        self, rules: EmbedRules, rows: pa.Table | Iterable[dict], stored: Mapping[str, np.ndarray]
    ) -> None:
        table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(list(rows))
        self.rules = rules
        self.chunks = table.drop_columns([c for c in STORED_IDS if c in table.column_names])
        ids = self.chunks["chunk_id"].to_pylist()
        self._index = {cid: i for i, cid in enumerate(ids)}
        # The batch's vectors, row i for chunk i; `kept`: rows that hold one to write.
        self.vectors = np.zeros((len(ids), rules.card.dimension), dtype=np.float32)
        self.kept = np.zeros(len(ids), dtype=bool)
        self.outcome = Outcome()
        todo: list[int] = []
        for i, digest in enumerate(self.chunks["content_hash"].to_pylist()):
            vector = stored.get(digest)
            if vector is not None:
                self.vectors[i] = vector
                self.kept[i] = True
            else:
                todo.append(i)
        inputs: list[str | TokenIds] = []
        if todo:  # the whole table when every chunk goes to the engine (no copy)
            inputs = rules.engine_inputs(table if len(todo) == len(ids) else table.take(todo))
        self.todo: list[Item] = [(ids[i], item) for i, item in zip(todo, inputs, strict=True)]
        self.waiting = {cid for cid, _ in self.todo}

    @property
    def ready(self) -> bool:
        return not self.waiting

    def take_rows(
        self, chunk_ids: Sequence[str], vectors: np.ndarray, verdicts: Sequence[str | None]
    ) -> None:
        """The engine's rows for some of this batch's chunks, with their
        `EmbedRules.verdicts` entries: a kept row is copied in (the engine's window array
        is not this batch's to keep), a failed chunk is quarantined."""
        at = np.fromiter((self._index[c] for c in chunk_ids), dtype=np.int64, count=len(chunk_ids))
        ok = np.fromiter((v is None for v in verdicts), dtype=bool, count=len(chunk_ids))
        if ok.any():
            self.vectors[at[ok]] = vectors[ok]
            self.kept[at[ok]] = True
            kept_at = pa.array(at[ok])
            self.outcome.embedded.update(self.chunks["partition"].take(kept_at).to_pylist())
        for i, verdict in zip(at[~ok].tolist(), (v for v in verdicts if v), strict=True):
            row = self.chunks.slice(i, 1).to_pylist()[0]
            self.outcome.failed.append(self.rules.quarantined(row, verdict))
        self.waiting.difference_update(chunk_ids)

    def take_all(self, vectors: np.ndarray, failed: Mapping[int, str]) -> None:
        """The engine's rows for the whole of `todo`, in its order."""
        verdicts = self.rules.verdicts(vectors, failed)
        self.take_rows([cid for cid, _item in self.todo], vectors, verdicts)

    def table(self) -> pa.Table:
        """Every chunk with a vector (stored or kept); quarantined ones stay out."""
        keep = np.flatnonzero(self.kept)
        return self.rules.rows_table(self.chunks.take(keep), self.vectors[keep])
