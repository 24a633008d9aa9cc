"""The generations a run writes: the live one, the previous live one, and the configured one.

An ingest keeps every generation that may answer a query current: the live one (readers use
it now), the one it replaced (rollback returns to it in one step, so it must not fall
behind), and the configured model's (the one being built, which must hold every document
before it may go live). A file that arrives through the inbox during a build therefore
reaches the live generation in the same run, and the new one too: nothing is dropped at
the switch. Promotion checks it anyway (`readiness`), under the store's lock.

The live and previous generations' models come from the pool (their recorded path, checked
against their card); their weights load only if something is to be embedded with them.
A generation that is none of the three (an abandoned build, a model two switches ago) is
left as it is: it is not served, and promoting it refuses until it is complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from corpusmill.model import Model
from corpusmill.model.card import ModelCard
from corpusmill.model.pool import ModelPool
from corpusmill.store import Store
from corpusmill.store.generations import Generation, Registry, read_registry, register

LIVE, PREVIOUS, CONFIGURED = "live", "previous", "configured"


@dataclass(frozen=True)
class Target:
    generation: Generation
    store: Store  # the store with this generation's tables
    model: Model
    roles: tuple[str, ...]  # why the run writes it: live, previous, configured

    @property
    def configured(self) -> bool:
        return CONFIGURED in self.roles

    @property
    def label(self) -> str:
        return f"{self.generation.gen_id} ({', '.join(self.roles)})"


def register_configured(store: Store, model: Model, chunker: str = "") -> Generation:
    """The configured model's generation, registered if new (a store's first generation
    is live at once; a store from before generations is registered in place first)."""
    _registry, gen = register(
        store,
        model.card,
        model_path=str(Path(model.path).resolve()),
        chunker=chunker,
        precision=str(model.lineage().get("dtype", "")),
    )
    return gen


def served(registry: Registry, card: ModelCard) -> list[tuple[Generation, tuple[str, ...]]]:
    """(generation, roles) the run for `card` keeps in sync, live first, configured last.
    The configured generation may not be registered yet (`Registry.planned`)."""
    configured = registry.planned(card)
    roles: dict[str, list[str]] = {}
    gens: dict[str, Generation] = {}
    for gen_id, role in ((registry.live, LIVE), (registry.previous, PREVIOUS)):
        if gen_id and gen_id in registry.generations:
            roles.setdefault(gen_id, []).append(role)
            gens[gen_id] = registry.generations[gen_id]
    roles.setdefault(configured.gen_id, []).append(CONFIGURED)
    gens.setdefault(configured.gen_id, configured)
    order = sorted(gens, key=lambda g: CONFIGURED in roles[g])  # configured last
    return [(gens[g], tuple(roles[g])) for g in order]


def run_targets(store: Store, pool: ModelPool, chunker: str = "") -> list[Target]:
    """What this run writes, each generation with its store view and model, live first.
    Read inside the shards' write lock: a promotion or drop (which holds the whole store)
    is either wholly before this or wholly after."""
    register_configured(store, pool.base, chunker)
    registry = read_registry(store)
    out = []
    for gen, roles in served(registry, pool.base.card):
        model = pool.for_card(gen.card, gen.model_path, what=f"generation {gen.gen_id}")
        out.append(Target(gen, gen.view(store), model, roles))
    return out


def configured_target(targets: list[Target]) -> Target:
    return next(t for t in targets if t.configured)
