"""Asset checks on `embeddings`: the Dagster side of corpusmill/store/checks.py.

One step evaluates all three (so a failure of one still reports the others) and all are
blocking: in a run that also materialises `rerank_scores` (e.g. `corpusmill ingest
--rerank`), a failed check stops it, since scores over broken or foreign vectors would be
wrong. They check the whole table, whatever shards the run covered.

(No `from __future__ import annotations`: Dagster reads the resource annotations.)
"""

from collections.abc import Iterator

import dagster as dg

from assets.embeddings import embeddings
from resources import EmbedderResource, LanceStoreResource

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
    store: LanceStoreResource, embedder: EmbedderResource
) -> Iterator[dg.AssetCheckResult]:
    from corpusmill.store.checks import check_coverage, check_model_card, check_vectors

    db, card = store.store(), embedder.model.card  # the card: files only, no weights
    outcomes = {
        "vectors_valid": check_vectors(db, card),
        "one_embedding_per_chunk": check_coverage(db),
        "model_card_matches": check_model_card(db, card),
    }
    for name, outcome in outcomes.items():
        yield dg.AssetCheckResult(
            asset_key=embeddings.key,
            check_name=name,
            passed=outcome.passed,
            description=outcome.description,
            metadata=outcome.metadata,
            severity=dg.AssetCheckSeverity.ERROR,
        )


EMBEDDINGS_CHECKS = [embeddings_checks]
