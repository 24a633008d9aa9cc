"""A run whose worker died with the machine is failed by the next sensor tick and its
changes retried, instead of blocking the inbox until the run timeout (an hour; issue 15,
item 2). Pure liveness checks on real processes, then the sensor on an ephemeral instance
holding a STARTED run whose recorded worker pid is dead."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import dagster as dg
import pytest

from corpusmill.config import Settings
from corpusmill.liveness import worker_alive
from corpusmill.store import Store


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    proc.kill()
    proc.wait()
    return proc.pid


def test_liveness_of_real_processes():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert worker_alive(proc.pid, time.time()) is True
        # The same pid on a process that started after the run began: a reused pid.
        assert worker_alive(proc.pid, time.time() - 3600) is False
    finally:
        proc.kill()
        proc.wait()
    assert worker_alive(proc.pid, time.time()) is False


def _started_run(instance, sensor_name: str, pid: int):
    from dagster._core.events import EngineEventData
    from dagster._core.storage.dagster_run import DagsterRun

    from sensors.inbox import TRIGGER_TAG

    run = instance.add_run(
        DagsterRun(
            job_name="ingest",
            run_id=str(uuid.uuid4()),
            status=dg.DagsterRunStatus.STARTED,
            tags={TRIGGER_TAG: sensor_name},
        )
    )
    instance.report_engine_event(
        f"Started process for run (pid: {pid}).", run, EngineEventData.in_process(pid)
    )
    return run


@pytest.mark.parametrize("worker", ["dead", "alive"])
def test_the_sensor_fails_a_run_whose_worker_is_gone_and_retries(tmp_path, db_uri, worker):
    from sensors.inbox import build_inbox_sensor

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.txt").write_text("a file that arrived before the crash")
    sensor = build_inbox_sensor(
        Settings(inbox=str(inbox), sensor_interval=1, max_file_bytes=4096), name="s"
    )
    instance = dg.DagsterInstance.ephemeral()
    pid = _dead_pid() if worker == "dead" else os.getpid()
    run = _started_run(instance, "s", pid)

    ctx = dg.build_sensor_context(
        instance=instance, sensor_name="s", resources={"store": Store(db_uri)}
    )
    result = sensor(ctx)
    status = instance.get_run_by_id(run.run_id).status
    if worker == "alive":
        assert isinstance(result, dg.SkipReason) and "in flight" in result.skip_message
        assert status == dg.DagsterRunStatus.STARTED
        return
    assert status == dg.DagsterRunStatus.FAILURE
    assert len(result.run_requests) == 1  # the changes are asked for again at once
    failure = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert f"pid {pid}" in failure[-1].dagster_event.message
