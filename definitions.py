"""The whole corpusmill graph in one place: assets, resources, jobs, sensors, executor."""

import dagster as dg

from assets.corpus import chunked_documents, raw_corpus
from assets.embeddings import embeddings
from assets.evaluation import retrieval_quality
from assets.maintenance import store_upkeep, upkeep_job, upkeep_schedule
from assets.partitions import shards
from assets.rerank import rerank_scores
from resources import CrossEncoderResource, EmbedderResource, LanceStoreResource
from sensors import inbox_sensor

ingest_job = dg.define_asset_job(
    "ingest",
    selection=[raw_corpus, chunked_documents, embeddings],
    partitions_def=shards,
    description="sources -> documents -> chunks -> embeddings, all requested shards in one run",
)

defs = dg.Definitions(
    assets=[
        raw_corpus,
        chunked_documents,
        embeddings,
        rerank_scores,
        retrieval_quality,
        store_upkeep,
    ],
    jobs=[ingest_job, upkeep_job],
    schedules=[upkeep_schedule],
    sensors=[inbox_sensor],
    resources={
        "store": LanceStoreResource(),
        "embedder": EmbedderResource(),
        "reranker": CrossEncoderResource(),
    },
    # In-process: the model resource is initialised once and shared by every step.
    executor=dg.in_process_executor,
)
