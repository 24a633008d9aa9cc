"""The Definitions' jobs as reconstructable targets. They live in a module importable by
its dotted name (`tests.assets.definitions_jobs`), so the child processes of a
multiprocess executor can rebuild them too: pytest imports test files under other names."""

from tests.runs import tiny_settings


def ingest_job(db: str, model: str):
    """The ingest job exactly as `build_definitions` makes it, its executor included, for
    the tiny model's settings with the store at `db`."""
    from definitions import build_definitions

    return build_definitions(tiny_settings(db, model)).resolve_job_def("ingest")
