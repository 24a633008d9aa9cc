"""live_generation: which generation search answers from, and the switch between them.

In the `ingest` and `build_generation` jobs after `embeddings` (and its blocking checks):
with CORPUSMILL_PROMOTE=auto, once the configured model's generation is complete in every
shard and its checks (and the gate, with CORPUSMILL_GATE_DATA) pass, it goes live here, in
one commit; until then each run records why not, and search keeps answering from the live
generation. Materialised from the launchpad, its config promotes a generation by id or
rolls back to the previous one: the UI side of `corpusmill generations promote|rollback`.
The decisions are `corpusmill.lifecycle.operations`.

(No `from __future__ import annotations`: Dagster reads the annotations at decoration.)
"""

from typing import Literal

import dagster as dg

from assets.embeddings import embeddings
from corpusmill.config import Settings
from corpusmill.model.pool import ModelPool
from corpusmill.store import Store


class LiveGenerationConfig(dg.Config):
    """`auto`: follow CORPUSMILL_PROMOTE for the configured model's generation.
    `promote`: make `generation` (unset: the configured model's) live now, if it may.
    `rollback`: return to the generation live before the current one."""

    action: Literal["auto", "promote", "rollback"] = "auto"
    generation: str = ""


@dg.asset(deps=[embeddings], group_name="corpus", kinds={"lancedb"})
def live_generation(
    context: dg.AssetExecutionContext,
    config: LiveGenerationConfig,
    store: dg.ResourceParam[Store],
    models: dg.ResourceParam[ModelPool],
    settings: dg.ResourceParam[Settings],
) -> dg.MaterializeResult:
    """The store's live model generation (what search, the service and evaluation answer
    from). Promotes the configured model's generation once it is complete in all 16
    shards and its checks pass (CORPUSMILL_PROMOTE=auto), or as the config asks; a refusal
    is recorded with its reason on the generation and here."""
    from corpusmill.lifecycle.operations import Outcome, promote, rollback
    from corpusmill.store.generations import read_registry

    configured = read_registry(store).planned(models.base.card).gen_id
    outcome: Outcome | None = None
    if config.action == "rollback":
        outcome = rollback(store)
    elif config.action == "promote" or settings.promote == "auto":
        target = config.generation or configured
        if read_registry(store).live != target:
            outcome = promote(store, target, models, settings.gate())
    registry = read_registry(store)
    live = registry.live_generation
    meta: dict = {
        "live_generation": registry.live or "none",
        "live_model": live.model_id if live else "none",
        "configured_generation": configured,
        "configured_state": registry.state_of(configured)
        if configured in registry.generations
        else "unregistered",
        "previous_generation": registry.previous or "none",
        "promote": settings.promote,
        "registry_version": registry.version,
    }
    if outcome is not None:
        meta["action"] = outcome.action
        meta["switched"] = outcome.done
        meta["refused"] = outcome.reason or "no"
        if "gate" in outcome.figures:
            meta["gate"] = dg.MetadataValue.json(outcome.figures["gate"])
        if not outcome.done:
            if config.action != "auto":  # asked for from the launchpad: a failed run
                raise dg.Failure(f"{outcome.action} refused: {outcome.reason}", metadata=meta)
            context.log.warning(f"{outcome.generation} not promoted: {outcome.reason}")
    return dg.MaterializeResult(metadata=meta)
