"""A whole-machine crash under a real `dagster-daemon`: the daemon, its code server and the
run worker are SIGKILLed together while a run is STARTED, then the daemon is restarted.
The run's worker pid is gone, so the inbox sensor fails that run on one of its first
ticks and retries it; the inbox catches up in a bounded number of ticks, not after the
hour-long run timeout (issue 15, item 2)."""

from __future__ import annotations

import time

import dagster as dg
import pytest

from tests.e2e.daemon_harness import InboxDaemon, expected_chunks, stored_chunks, wait_for

INTERVAL = 5
TICKS = 12  # the bound: the inbox is in sync within this many sensor intervals


@pytest.mark.slow
def test_inbox_catches_up_after_daemon_code_server_and_worker_die(tmp_path, tiny_embedder_path):
    with InboxDaemon(tmp_path, tiny_embedder_path, interval=INTERVAL) as daemon:
        try:
            for i in range(20):
                daemon.write(f"f{i:02d}.txt", f"file {i} about a machine that crashed " * 30)
            wait_for(
                lambda: daemon.runs([dg.DagsterRunStatus.STARTED]) and daemon.run_workers(),
                180,
                "an inbox run STARTED with its worker",
            )
            [crashed] = daemon.runs([dg.DagsterRunStatus.STARTED])
            daemon.close()  # SIGKILL every process of the daemon's session: the machine dies
            daemon.proc = None
            assert daemon.runs([dg.DagsterRunStatus.STARTED]), "the run is left STARTED"

            restarted = time.time()
            daemon.start()
            wait_for(
                lambda: (
                    stored_chunks(daemon.db) == expected_chunks(daemon.inbox, daemon.model_path)
                ),
                TICKS * INTERVAL + 60,  # + the daemon's and the run's start-up
                "the inbox in sync after the crash",
                every=2,
            )
            caught_up = time.time() - restarted
            with daemon.instance() as instance:
                status = instance.get_run_by_id(crashed.dagster_run.run_id).status
                failure = instance.all_logs(
                    crashed.dagster_run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE
                )
            assert status == dg.DagsterRunStatus.FAILURE
            assert "is gone" in failure[-1].dagster_event.message
            print(
                f"caught up {caught_up:.0f}s after the restart ({caught_up / INTERVAL:.0f} ticks)"
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- daemon log ---\n{daemon.log_tail()}") from exc
