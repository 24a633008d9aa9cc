"""The ingest job, defined once: definitions.py lists it and `corpusmill ingest` runs it, so
CLI runs appear in the UI under `ingest`, not as an ephemeral job."""

import dagster as dg

from assets.corpus import chunked_documents, raw_corpus
from assets.embeddings import embeddings
from assets.rerank import rerank_scores

INGEST_ASSETS = [raw_corpus, chunked_documents, embeddings]
INGEST_DESCRIPTION = (
    "sources -> documents -> chunks -> embeddings (with their checks), all requested shards "
    "in one run"
)

ingest_job = dg.define_asset_job(
    "ingest",
    selection=INGEST_ASSETS,
    description=INGEST_DESCRIPTION,
)


def ingest_job_with_rerank():
    """`corpusmill ingest --rerank`: the same job name, rerank_scores added to the run."""
    return dg.define_asset_job(
        "ingest",
        selection=[*INGEST_ASSETS, rerank_scores],
        description=f"{INGEST_DESCRIPTION}, then rerank_scores",
    )
