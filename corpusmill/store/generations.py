"""The generations registry: which model-bound tables exist, and which generation is live.

A generation is everything one model writes (`schemas.MODEL_TABLES`: its chunks, its
vectors, its rerank scores) plus its card. Its id follows from the card
(`model.card.generation_id`), so configuring the same model again finds it. The table
`generations` holds one row per generation and one row more, `@live`, whose `live` field
names the live generation and whose `previous` field the one it replaced.

**Which generation is live is one field of one row.** Promotion and rollback write the
`@live` row (and the two generations' states beside it) in one `merge_insert`, one Lance
commit: a reader that reads the registry sees the old pointer or the new one, never both
and never none, and a process killed during a switch leaves whichever commit landed.
Callers hold the store's whole-store write lock around a switch (`lifecycle.py`), so two
switches never interleave their reads and writes; even without one (object stores without
leases) the pointer is a single value, so exactly one generation is live.

**The first generation keeps the plain names** (`chunks`, `embeddings`, `rerank_scores`):
a store written before generations existed is that generation, registered in place on
first use from the card in its `embeddings` schema, without re-embedding anything; a store
with one model looks exactly as before. Later generations' tables end in their id.
Registering is serialised (`Store.serialised`), so two first users agree on who owns the
plain names.

Readers that find no registry (a store nobody has written since generations existed, or a
read-only one) see the plain tables as the live generation (`read_registry`), without
writing.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from corpusmill.model.card import ModelCard, generation_id
from corpusmill.store.predicates import eq_filter
from corpusmill.store.schemas import MODEL_TABLES, generations_schema, rows_to_table, table_card
from corpusmill.store.store import Store

TABLE = "generations"
LIVE = "@live"  # the pointer row's key

BUILDING, READY, LIVE_STATE, RETIRED = "building", "ready", "live", "retired"


@dataclass(frozen=True)
class Generation:
    gen_id: str
    card: ModelCard
    suffix: str = ""  # "": the plain table names
    model_path: str | None = None  # None: not known on any machine that wrote it
    state: str = BUILDING  # as recorded; `Registry.state_of` says what it is now
    chunker: str = ""
    precision: str = ""
    created: dt.datetime | None = None
    promoted: dt.datetime | None = None
    checks: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def model_id(self) -> str:
        return self.card.model_id

    def tables(self) -> dict[str, str]:
        """Logical name -> this generation's table."""
        return {name: f"{name}_{self.suffix}" if self.suffix else name for name in MODEL_TABLES}

    def view(self, store: Store) -> Store:
        """`store` with this generation's model-bound tables (see `Store.for_generation`)."""
        return store.for_generation(self.suffix)

    def row(self) -> dict[str, Any]:
        return {
            "gen_id": self.gen_id,
            "model_id": self.card.model_id,
            "card": json.dumps(asdict(self.card), sort_keys=True),
            "model_path": self.model_path,
            "suffix": self.suffix,
            "state": self.state,
            "chunker": self.chunker,
            "precision": self.precision,
            "created": self.created,
            "promoted": self.promoted,
            "checks": json.dumps(self.checks, sort_keys=True),
            "gate": json.dumps(self.gate, sort_keys=True),
            "note": self.note,
            "live": None,
            "previous": None,
            "changed": _now(),
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Generation:
        return cls(
            gen_id=row["gen_id"],
            card=ModelCard(**json.loads(row["card"])),
            suffix=row["suffix"] or "",
            model_path=row["model_path"],
            state=row["state"] or BUILDING,
            chunker=row["chunker"] or "",
            precision=row["precision"] or "",
            created=row["created"],
            promoted=row["promoted"],
            checks=json.loads(row["checks"] or "{}"),
            gate=json.loads(row["gate"] or "{}"),
            note=row["note"] or "",
        )


@dataclass(frozen=True)
class Registry:
    generations: dict[str, Generation] = field(default_factory=dict)
    live: str | None = None
    previous: str | None = None
    version: int = 0  # of the registry table (0: none; the plain tables, unregistered)

    @property
    def live_generation(self) -> Generation | None:
        return self.generations.get(self.live) if self.live else None

    def get(self, gen_id: str) -> Generation:
        from corpusmill.errors import UsageError

        if gen_id not in self.generations:
            known = ", ".join(sorted(self.generations)) or "none"
            raise UsageError(
                f"no generation {gen_id!r} in this store (known: {known}); "
                "`corpusmill generations list` shows them"
            )
        return self.generations[gen_id]

    def planned(self, card: ModelCard) -> Generation:
        """`card`'s generation: as registered, or as `register` would register it now (the
        plain names if the store has no generation yet)."""
        gen_id = generation_id(card)
        if gen_id in self.generations:
            return self.generations[gen_id]
        plain_taken = any(g.suffix == "" for g in self.generations.values())
        first = self.live is None and not plain_taken
        return Generation(gen_id, card, suffix="" if first else gen_id, created=_now())

    def state_of(self, gen_id: str) -> str:
        """live, retired (was live; `previous` is the rollback target), or as recorded."""
        gen = self.generations[gen_id]
        if gen_id == self.live:
            return LIVE_STATE
        if gen_id == self.previous or gen.promoted is not None:
            return RETIRED
        return gen.state


def read_registry(store: Store) -> Registry:
    """The registry as committed now. No registry table: the plain tables, if an
    `embeddings` table holds a card, as the one live generation (nothing is written)."""
    table = store.open(TABLE)
    if table is None:
        implicit = _plain_generation(store)
        if implicit is None:
            return Registry()
        return Registry({implicit.gen_id: implicit}, live=implicit.gen_id)
    return _from_table(table)


class RegistryCache:
    """`read_registry` for a reader that resolves the live generation per request: the
    table's version is read each time (one manifest), the rows only when it moved."""

    def __init__(self) -> None:
        self._entry: tuple[tuple[str, int], Registry] | None = None
        self._lock = threading.Lock()

    def read(self, store: Store) -> Registry:
        table = store.open(TABLE)
        if table is None:
            return read_registry(store)
        key = (store.uri, int(table.version))
        with self._lock:
            if self._entry is not None and self._entry[0] == key:
                return self._entry[1]
        registry = _from_table(table)
        with self._lock:
            self._entry = (key, registry)
        return registry


def _from_table(table) -> Registry:
    rows = table.to_arrow().to_pylist()
    pointer = next((r for r in rows if r["gen_id"] == LIVE), None)
    gens = {r["gen_id"]: Generation.from_row(r) for r in rows if r["gen_id"] != LIVE}
    return Registry(
        gens,
        live=pointer["live"] if pointer else None,
        previous=pointer["previous"] if pointer else None,
        version=int(table.version),
    )


def _plain_generation(store: Store) -> Generation | None:
    """The generation the plain tables hold, from the card in `embeddings`' schema."""
    base = store.for_generation("")
    table = base.open("embeddings")
    if table is None:
        return None
    meta = table_card(table.schema)
    vector: Any = table.schema.field("vector").type  # a fixed-size list
    card = ModelCard(
        model_id=meta.get("model_id", ""),
        revision=meta.get("revision", ""),
        dimension=int(meta.get("dimension") or vector.list_size),
        pooling=meta.get("pooling", ""),
        normalize=meta.get("normalize", "true") == "true",
        max_seq_length=0,  # not recorded by older stores; not part of the vector space
    )
    return Generation(generation_id(card), card, "", state=LIVE_STATE, created=_now())


def register(
    store: Store,
    card: ModelCard,
    *,
    model_path: str | None,
    chunker: str = "",
    precision: str = "",
) -> tuple[Registry, Generation]:
    """The generation of `card`, registered if new (and the registry created, with the
    plain tables' generation in it, if this store has none). A store's first generation
    takes the plain names and is live at once: nothing to keep readers from. A known
    generation whose model path was unknown learns `model_path`. Serialised, so two first
    users agree on who owns the plain names."""
    gen_id = generation_id(card)
    with store.serialised():
        registry = read_registry(store)
        rows: list[Generation] = []
        pointer: dict[str, Any] | None = None
        if registry.version == 0 and registry.live is not None:
            plain = registry.generations[registry.live]
            if plain.gen_id == gen_id:  # the same model: the full card and its path
                plain = replace(plain, card=card, model_path=model_path)
            rows.append(plain)
            pointer = _pointer(plain.gen_id, None)
            registry = Registry({plain.gen_id: plain}, live=plain.gen_id)
        known = registry.generations.get(gen_id)
        if known is None:
            known = replace(
                registry.planned(card), model_path=model_path, chunker=chunker, precision=precision
            )
            if registry.live is None:  # the store's first generation: live at once
                known = replace(known, state=LIVE_STATE, promoted=_now())
                pointer = _pointer(gen_id, None)
            rows.append(known)
        elif known.model_path != model_path and model_path is not None:
            known = replace(known, model_path=model_path)
            rows = [g for g in rows if g.gen_id != gen_id] + [known]
        if rows or pointer:
            _write(store, [g.row() for g in rows] + ([pointer] if pointer else []))
            registry = read_registry(store)
        return registry, registry.generations[gen_id]


def switch(store: Store, registry: Registry, target: str, *, note: str) -> Registry:
    """Make `target` live, in one commit: the `@live` row (live = target, previous = the
    generation live until now) and both generations' states. The caller holds the
    whole-store write lock and has checked that `target` may go live."""
    old = registry.live
    now = _now()
    rows = [_pointer(target, old if old != target else registry.previous, changed=now)]
    gen = registry.get(target)
    rows.append(replace(gen, state=LIVE_STATE, promoted=now, note=note).row())
    if old and old != target and old in registry.generations:
        rows.append(replace(registry.generations[old], state=RETIRED).row())
    _write(store, rows)
    return read_registry(store)


def update(store: Store, gen: Generation, **changes: Any) -> Generation:
    """Record `changes` (checks, gate, note, state, ...) on `gen`'s row: one commit."""
    new = replace(gen, **changes)
    _write(store, [new.row()])
    return new


def discard(store: Store, registry: Registry, gen: Generation) -> list[str]:
    """Remove `gen`: its model-bound tables, its embed-stage quarantine rows, then its
    registry row; nothing else. Returns the tables dropped. Rows last: a discard killed
    half-way leaves the row, and running it again finishes the job. The caller holds the
    whole-store write lock and has checked that `gen` is not live."""
    view = gen.view(store)
    dropped = [view.physical(name) for name in MODEL_TABLES if view.drop_table(name)]
    stage = eq_filter("stage", view.stage("embed"))
    quarantine = store.open("quarantine")
    if quarantine is not None and quarantine.count_rows(stage):
        store.replace_rows(quarantine, "quarantine_id", None, stage)
    _forget(store, registry, gen.gen_id)
    return dropped


def _forget(store: Store, registry: Registry, gen_id: str) -> None:
    """Delete `gen_id`'s row and clear it as the rollback target, in one commit."""
    rows = []
    if registry.previous == gen_id and registry.live:
        rows.append(_pointer(registry.live, None))
    table = store.ensure(TABLE, generations_schema())
    store.replace_rows(
        table,
        "gen_id",
        rows_to_table(rows, generations_schema()) if rows else None,
        eq_filter("gen_id", gen_id),
    )


def _pointer(live: str, previous: str | None, changed: dt.datetime | None = None) -> dict:
    return {
        "gen_id": LIVE,
        "live": live,
        "previous": previous,
        "changed": changed or _now(),
    }


def _write(store: Store, rows: list[dict[str, Any]]) -> None:
    table = store.ensure(TABLE, generations_schema())
    full = [{f.name: r.get(f.name) for f in generations_schema()} for r in rows]
    store.replace_rows(table, "gen_id", rows_to_table(full, generations_schema()), None)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
