"""Asset checks on `embeddings`: the Dagster side of corpusmill/store/checks.py.

One step evaluates all three (so a failure of one still reports the others) and all are
blocking: in a run that also materialises `rerank_scores` (e.g. `corpusmill ingest
--rerank`), a failed check stops it, since scores over broken or foreign vectors would be
wrong. In a partitioned run they check that run's shards only (the coverage and vector
checks filter on `partition`): a concurrent run on other shards commits its chunks before
its vectors, and a whole-table check would fail on its half-written shards. Run on their
own, without partitions, they check the whole table.

(No `from __future__ import annotations`: Dagster reads the resource annotations.)
"""

from collections.abc import Iterator

import dagster as dg

from assets.embeddings import embeddings
from assets.partitions import shards
from corpusmill.model import Model
from corpusmill.store import Store

CHECKS = {
    "vectors_valid": "Every vector is finite and of the configured model's dimension, and of "
    "unit length when the model normalises its output (non-zero when it does not).",
    "one_embedding_per_chunk": "Each current chunk has exactly one embedding, of its current "
    "content; no embedding of a chunk that is gone; no chunk id twice.",
    "model_card_matches": "The table's model card (model id, weights revision, dimension, "
    "pooling, normalisation) is the configured embedder's (CORPUSMILL_MODEL).",
}


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(name, asset=embeddings, description=text, blocking=True)
        for name, text in CHECKS.items()
    ],
    name="embeddings_checks",
    description="Vectors, coverage and model card of the embeddings table.",
)
def embeddings_checks(
    context: dg.AssetCheckExecutionContext,
    store: dg.ResourceParam[Store],
    embedder: dg.ResourceParam[Model],
) -> Iterator[dg.AssetCheckResult]:
    from corpusmill.store.checks import (
        check_coverage,
        check_model_card,
        check_vectors,
        outcomes_record,
    )
    from corpusmill.store.generations import read_registry, update

    card = embedder.card  # the folder's files only, no weights
    partitions = run_partitions(context)
    # The configured model's generation: the one the run built (a new model's, beside the
    # live one, while it builds). Promotion runs these checks again over all of it.
    gen = read_registry(store).planned(card)
    view = gen.view(store)
    outcomes = {
        "vectors_valid": check_vectors(view, card, partitions=partitions),
        "one_embedding_per_chunk": check_coverage(view, partitions),
        "model_card_matches": check_model_card(view, card),
    }
    if view.open("embeddings") is not None:
        scope = "all" if partitions is None else len(partitions)
        checked = outcomes_record(outcomes, scope=scope, by="asset check")
        update(store, read_registry(store).get(gen.gen_id), checks=checked)
    for name, outcome in outcomes.items():
        yield dg.AssetCheckResult(
            asset_key=embeddings.key,
            check_name=name,
            passed=outcome.passed,
            description=outcome.description,
            metadata=outcome.metadata,
            severity=dg.AssetCheckSeverity.ERROR,
        )


def run_partitions(context: dg.AssetCheckExecutionContext) -> list[str] | None:
    """The shards the run covers (one key or a single-run range: the check, unpartitioned
    itself, sees the run's keys), or None when the run has none (the whole table). A run
    of the checks alone has the range in its tags but no partitions definition, so the
    range is resolved against `shards` there."""
    if not (context.has_partition_key or context.has_partition_key_range):
        return None
    try:
        return list(context.partition_keys)
    except dg.DagsterInvariantViolationError:  # "partition_keys for a non-partitioned run"
        return list(shards.get_partition_keys_in_range(context.partition_key_range))


EMBEDDINGS_CHECKS = [embeddings_checks]
