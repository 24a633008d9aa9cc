"""The whole corpusmill graph in one place: assets, checks, resources, jobs, sensors, executor.

The configuration is read here, once (`Settings.from_env()`), and handed to the resources
and the sensor; nothing below reads the environment. The assets get their owners, column
schemas and code versions (which follow the configured model and chunker) from
`assets.specs.with_specs`.
"""

import dagster as dg

from assets.checks import EMBEDDINGS_CHECKS
from assets.corpus import chunked_documents, raw_corpus
from assets.embeddings import embeddings
from assets.evaluation import retrieval_quality
from assets.jobs import ingest_job
from assets.maintenance import store_upkeep, upkeep_job, upkeep_schedule
from assets.rerank import rerank_scores
from assets.specs import with_specs
from corpusmill.config import Settings, prepare_process
from resources import build_resources
from sensors import build_inbox_sensor

prepare_process()
settings = Settings.from_env()
resources = build_resources(settings)

defs = dg.Definitions(
    assets=with_specs(
        [
            raw_corpus,
            chunked_documents,
            embeddings,
            rerank_scores,
            retrieval_quality,
            store_upkeep,
        ],
        resources,
    ),
    asset_checks=EMBEDDINGS_CHECKS,
    jobs=[ingest_job, upkeep_job],
    schedules=[upkeep_schedule],
    sensors=[
        build_inbox_sensor(
            settings.inbox,
            interval_seconds=settings.sensor_interval,
            run_timeout_seconds=settings.sensor_run_timeout,
            max_file_bytes=settings.max_file_bytes,
        )
    ],
    resources=resources,
    # Runs print INFO and up to the console (`make dev`'s terminal); the run log in the UI
    # still records every event, DEBUG included.
    loggers={"console": dg.colored_console_logger.configured({"log_level": "INFO"})},
    # In-process: the model resource is initialised once and shared by every step.
    executor=dg.in_process_executor,
)
