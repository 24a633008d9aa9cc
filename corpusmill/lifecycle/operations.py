"""The operator's actions on generations: promote, rollback, drop, and the list.

Each action holds the store's whole-store write lock (`Store.write_lock()`), so no ingest
commits while it reads and decides, and two actions never interleave. A switch is one
commit of the registry (`store.generations.switch`): a process killed during a promotion
or a rollback leaves the old generation live or the new one, never none or both; rerun, the
action finds the work done or does it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from corpusmill.errors import UsageError
from corpusmill.lifecycle.gate import run_gate
from corpusmill.lifecycle.readiness import assess, shard_status
from corpusmill.lifecycle.spec import GateSpec
from corpusmill.model.pool import ModelPool
from corpusmill.store import Store
from corpusmill.store.generations import (
    BUILDING,
    READY,
    Generation,
    Registry,
    discard,
    read_registry,
    register,
    switch,
    update,
)


@dataclass
class Outcome:
    """What an action did: `done` False with a `reason` when it refused (or had nothing to
    do: `reason` says so)."""

    action: str
    generation: str
    done: bool
    reason: str = ""
    live: str | None = None
    previous: str | None = None
    figures: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def whole_store(store: Store):
    """The whole-store write lock, every generation's shards included (on `s3://` each
    generation's shard leases are their own)."""
    suffixes = [g.suffix for g in read_registry(store).generations.values()]
    return store.write_lock(scopes=suffixes)


def _registered(store: Store) -> Registry:
    """The registry; a store from before generations is registered in place first."""
    registry = read_registry(store)
    if registry.version == 0 and registry.live_generation is not None:
        gen = registry.live_generation
        register(store, gen.card, model_path=gen.model_path)
        registry = read_registry(store)
    return registry


def promote(store: Store, gen_id: str, pool: ModelPool, gate: GateSpec | None = None) -> Outcome:
    """Make `gen_id` live if every shard of it is complete, its checks pass (recorded on
    its row) and, with a `gate`, it retrieves no worse than the live generation (figures
    recorded); else refuse and record why."""
    with whole_store(store):
        registry = _registered(store)
        gen = registry.get(gen_id)
        if registry.live == gen_id:
            return _outcome("promote", gen_id, registry, False, f"{gen_id} is live already")
        readiness = assess(store, gen)
        figures: dict[str, Any] = {"shards_complete": readiness.shards_complete}
        # Recorded only when they ran (every shard complete): an earlier record stays.
        checks = readiness.checks_record() if readiness.checks else gen.checks
        if not readiness.ready:
            reason = readiness.reason()
            update(store, gen, checks=checks, note=f"promotion refused: {reason}")
            return _outcome("promote", gen_id, registry, False, reason, figures)
        gen = update(store, gen, checks=checks)
        live = registry.live_generation
        if gate is not None and live is not None:
            record = {**run_gate(store, live, gen, pool, gate), "at": _now()}
            figures["gate"] = record
            if not record["passed"]:
                reason = f"gate: {record['reason']}"
                update(store, gen, gate=record, note=f"promotion refused: {reason}")
                return _outcome("promote", gen_id, registry, False, reason, figures)
            gen = update(store, gen, gate=record)
        registry = switch(store, read_registry(store), gen_id, note="promoted")
        return _outcome("promote", gen_id, registry, True, "", figures)


def rollback(store: Store) -> Outcome:
    """Make the previous live generation live again. It was kept in sync while it was the
    rollback target (`targets`); its shards are checked anyway, no gate."""
    with whole_store(store):
        registry = _registered(store)
        target = registry.previous
        if not target or target not in registry.generations:
            return _outcome(
                "rollback", "", registry, False, "no previous live generation to return to"
            )
        readiness = assess(store, registry.generations[target], checks=False)
        if readiness.shards_complete < len(readiness.shards):
            return _outcome("rollback", target, registry, False, readiness.reason())
        registry = switch(store, registry, target, note="rolled back to")
        return _outcome("rollback", target, registry, True)


def drop(store: Store, gen_id: str, *, configured: str | None = None) -> Outcome:
    """Remove `gen_id`'s tables and its embed-stage quarantine rows, then its row: nothing
    else. Never the live generation, nor the configured one (the next run would build it
    again). Tables go first: a drop killed half-way leaves the row, and a rerun finishes."""
    with whole_store(store):
        registry = _registered(store)
        gen = registry.get(gen_id)
        if gen_id == registry.live:
            raise UsageError(f"{gen_id} is the live generation: promote another one first")
        if gen_id == configured:
            raise UsageError(
                f"{gen_id} is the configured model's generation (CORPUSMILL_MODEL): the next "
                "run would build it again; configure another model first"
            )
        dropped = discard(store, registry, gen)
        registry = read_registry(store)
        return _outcome("drop", gen_id, registry, True, figures={"tables_dropped": dropped})


def describe(store: Store) -> list[dict[str, Any]]:
    """One entry per generation: what `corpusmill generations list` prints."""
    registry = read_registry(store)
    out = []
    for gen_id, gen in sorted(registry.generations.items(), key=lambda kv: _created(kv[1])):
        view = gen.view(store)
        shards = shard_status(store, gen)
        complete = sum(1 for why in shards.values() if why is None)
        state = registry.state_of(gen_id)
        if state == BUILDING and complete == len(shards) and gen.checks.get("passed"):
            state = READY  # may go live: `promote` checks again, over all of it
        out.append(
            {
                "id": gen_id,
                "model_id": gen.model_id,
                "state": state,
                "rollback_target": gen_id == registry.previous,
                "rows": view.count("embeddings"),
                "chunks": view.count("chunks"),
                "shards_complete": complete,
                "shards": len(shards),
                "dimension": gen.card.dimension,
                "revision": gen.card.revision,
                "created": _iso(gen.created),
                "promoted": _iso(gen.promoted),
                "checks": gen.checks,
                "gate": gen.gate,
                "note": gen.note,
                "tables": gen.tables(),
                "model_path": gen.model_path,
            }
        )
    return out


def _outcome(
    action: str,
    gen_id: str,
    registry: Registry,
    done: bool,
    reason: str = "",
    figures: dict[str, Any] | None = None,
) -> Outcome:
    return Outcome(action, gen_id, done, reason, registry.live, registry.previous, figures or {})


def _created(gen: Generation) -> dt.datetime:
    return gen.created or dt.datetime.min.replace(tzinfo=dt.UTC)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
