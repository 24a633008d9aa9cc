"""The whole corpusmill graph in one place: assets, checks, resources, jobs, sensors, executor.

`build_definitions(settings)` is the only place a `dg.Definitions` is made: `defs` below
calls it with the environment's settings for `dagster dev -w workspace.yaml`, and the
`corpusmill` CLI (app/runs.py) and the tests call it with their own. The resources and the
sensor are built from that one `Settings`; the assets get their owners, column schemas and
code versions (which follow the configured model and chunker) from `assets.specs`.
"""

from collections.abc import Callable, Mapping

import dagster as dg

from assets.checks import EMBEDDINGS_CHECKS
from assets.corpus import chunked_documents, raw_corpus
from assets.embeddings import embeddings
from assets.evaluation import retrieval_quality
from assets.generations import live_generation
from assets.jobs import build_job, ingest_job, ingest_job_with_rerank
from assets.maintenance import store_upkeep, upkeep_job, upkeep_schedule
from assets.rerank import rerank_scores
from assets.specs import with_specs
from corpusmill.config import Settings, prepare_process
from resources import build_resources
from sensors import build_inbox_sensor

# Runs print INFO and up to the console (`make dev`'s terminal); the run log in the UI
# still records every event, DEBUG included.
CONSOLE = dg.colored_console_logger.configured({"log_level": "INFO"})


def build_definitions(
    settings: Settings,
    *,
    loggers: Mapping[str, dg.LoggerDefinition] | None = None,
    ingest_with_rerank: bool = False,
    on_commit: Callable[[str], None] | None = None,
) -> dg.Definitions:
    """The graph for `settings`. `loggers` are added to (or, by name, replace) the console
    logger; `ingest_with_rerank` adds rerank_scores to the `ingest` job (`corpusmill
    ingest --rerank`); `on_commit(table_name)` runs after each commit of the run's store
    (a test seam: the adversarial tests stop a run there)."""
    return dg.Definitions(
        assets=with_specs(
            [
                raw_corpus,
                chunked_documents,
                embeddings,
                live_generation,
                rerank_scores,
                retrieval_quality,
                store_upkeep,
            ],
            settings,
        ),
        asset_checks=EMBEDDINGS_CHECKS,
        jobs=[
            ingest_job_with_rerank() if ingest_with_rerank else ingest_job,
            build_job,
            upkeep_job,
        ],
        schedules=[upkeep_schedule],
        sensors=[build_inbox_sensor(settings)],
        resources=build_resources(settings, on_commit=on_commit),
        loggers={"console": CONSOLE, **(loggers or {})},
        # In-process: the model resource is initialised once and shared by every step.
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """What `dagster dev -w workspace.yaml` (and `make dev`) loads: the graph for the
    environment's settings, read when Dagster asks for it, not when this module is
    imported."""
    prepare_process()
    return build_definitions(Settings.from_env())
