"""The jobs, defined once: definitions.py lists them and `corpusmill ingest` (or
`corpusmill generations build`) runs them, so CLI runs appear in the UI under their names,
not as ephemeral jobs."""

import dagster as dg

from assets.corpus import chunked_documents, raw_corpus
from assets.embeddings import embeddings
from assets.generations import live_generation
from assets.rerank import rerank_scores

INGEST_ASSETS = [raw_corpus, chunked_documents, embeddings, live_generation]
INGEST_DESCRIPTION = (
    "sources -> documents -> chunks -> embeddings (with their checks) -> live_generation, "
    "all requested shards in one run"
)

ingest_job = dg.define_asset_job(
    "ingest",
    selection=INGEST_ASSETS,
    description=INGEST_DESCRIPTION,
)

# A new model's generation from the documents already stored: nothing is read from the
# sources again (what a migration reuses; BENCHMARKS, `make bench-generations`).
BUILD_ASSETS = [chunked_documents, embeddings, live_generation]
build_job = dg.define_asset_job(
    "build_generation",
    selection=BUILD_ASSETS,
    description="the configured model's generation from the stored documents: chunks -> "
    "embeddings (with their checks) -> live_generation, all requested shards in one run",
)


def ingest_job_with_rerank():
    """`corpusmill ingest --rerank`: the same job name, rerank_scores added to the run."""
    return dg.define_asset_job(
        "ingest",
        selection=[*INGEST_ASSETS, rerank_scores],
        description=f"{INGEST_DESCRIPTION}, then rerank_scores",
    )
