"""A small Dagster job for the warm run launcher's tests (tests/unit/test_warm_launcher.py):
a run that waits as long as its config says. It lives in an importable module because a
launched run loads its job by module name in its own process."""

from __future__ import annotations

import time

import dagster as dg


@dg.op(config_schema={"seconds": float})
def wait(context) -> None:
    deadline = time.time() + context.op_config["seconds"]
    while time.time() < deadline:
        time.sleep(0.05)


@dg.job(executor_def=dg.in_process_executor)  # as definitions.py runs the graph
def waiting_job() -> None:
    wait()
