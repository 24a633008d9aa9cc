"""The Definitions' jobs as `dg.reconstructable` targets. They live in a module importable
by its dotted name (`tests.assets.definitions_jobs`), so the child processes of a
multiprocess executor can import them too: pytest imports test files under other names."""


def ingest_job():
    """The ingest job exactly as definitions.py builds it, its executor included."""
    from definitions import defs

    return defs.resolve_job_def("ingest")
