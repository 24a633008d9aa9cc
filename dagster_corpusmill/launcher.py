"""Dagster runs in processes that start warm: forked from a server that has already
imported what every run imports.

Dagster's default launcher spawns a fresh Python process per run, which imports torch,
transformers, lancedb's dependencies and Dagster before its first step: 5-7 s on the
2-core machines (docs/BENCHMARKS.md, `make bench-drop`), longer than embedding the few
files an inbox sensor's run carries. This launcher keeps one fork server per launching
process (Python's `multiprocessing` "forkserver", started on the first launch), which
imports `PRELOAD` once; each run is a child forked from it, which then does what
`dagster api execute_run` does: loads the code location (definitions.py and the project's
own modules, fresh in every run, so an edit is picked up as with the default launcher)
and executes the run. A run is still its own process: a crash kills that run only.

Who calls what (dagster.yaml `run_launcher`): the daemon launches runs (the queued run
coordinator), the webserver terminates them (SIGINT to the worker pid the run recorded,
which Dagster's run worker turns into a clean cancel), run monitoring asks for their
health (`corpusmill.liveness`, the same pid test the inbox sensor uses). All three run on
one machine, as the default launcher also assumes.

What is preloaded, and why not lancedb itself: lancedb starts a background event-loop
thread at import, and a fork copies a thread's memory but not the thread (lancedb warns
its fork support is experimental). So the server imports what lancedb imports (its
namespace client, most of lancedb's import time, pylance, pyarrow, pandas) and each run
imports lancedb itself. Nothing in the server may start a thread or touch CUDA (which
cannot be used across a fork): `tests/unit/test_warm_launcher.py` holds it to that.

What is built, not only imported: the oneDNN kernels of the product shapes earlier runs
on this machine recorded (`corpusmill.model.kernel_shapes`), run once on one thread, which
starts none; each run otherwise builds them again: ~900 kernels, about a CPU-second, in a
1,000-document run's embed stage (docs/BENCHMARKS.md).

It is installed, not beside definitions.py (dagster_corpusmill/__init__.py says why).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
from dagster._core.launcher import (
    CheckRunHealthResult,
    LaunchRunContext,
    RunLauncher,
    WorkerStatus,
)
from dagster._serdes import ConfigurableClass

from corpusmill.config import prepare_process
from corpusmill.liveness import worker_alive

# Imported once by the fork server. Each is a module every run imports: the run worker's
# entry point, the model stack, and lancedb's dependencies (not lancedb: see above); then
# the oneDNN kernels of the shapes earlier runs recorded (warm_kernels.py).
PRELOAD = (
    "dagster._cli.api",
    "torch",
    "transformers.models.bert.modeling_bert",
    "tokenizers",
    "pyarrow.dataset",
    "pandas",
    "lance",
    "lance_namespace",
    "dagster_corpusmill.warm_kernels",  # last: builds the kernels earlier runs recorded
)


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid a run's worker recorded ("Started process for run (pid: N)", an engine
    event every Dagster run worker writes), the last one if the run was resumed."""
    pid = None
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data = entry.dagster_event.engine_event_data if entry.dagster_event else None
        value = (data.metadata or {}).get("pid") if data else None
        if value is not None:
            try:
                pid = int(getattr(value, "value", value))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                continue
    return pid


def _run_worker(input_json: str, preload: Sequence[str]) -> None:
    """The forked child: record what it found already imported, then be the run worker."""
    warm = [name for name in preload if name in sys.modules]  # before importing anything
    from dagster._cli.api import execute_run_command
    from dagster._core.events import EngineEventData
    from dagster._core.instance import DagsterInstance
    from dagster._grpc.types import ExecuteRunArgs
    from dagster._serdes import deserialize_value
    from dagster._utils.interrupts import setup_interrupt_handlers

    args = deserialize_value(input_json, ExecuteRunArgs)
    with DagsterInstance.from_ref(args.instance_ref) as instance:  # type: ignore[arg-type]
        run = instance.get_run_by_id(args.run_id)
        if run is not None:
            instance.report_engine_event(
                f"Run worker forked from the warm run server: {len(warm)} of "
                f"{len(preload)} preloaded modules already imported.",
                run,
                EngineEventData(metadata={"preloaded": ", ".join(warm) or "none"}),
            )
    setup_interrupt_handlers()  # SIGTERM cancels like SIGINT, as `dagster api` does
    assert execute_run_command.callback is not None
    execute_run_command.callback(input_json=input_json, compressed_input_json=None)


class WarmRunLauncher(RunLauncher, ConfigurableClass):
    """Launches each run in a process forked from a warm fork server (module docstring)."""

    def __init__(self, inst_data: Any = None, preload: Sequence[str] = PRELOAD) -> None:
        self._inst_data = inst_data
        self._preload = list(preload)
        self._context: Any = None
        self._workers: dict[str, multiprocessing.process.BaseProcess] = {}
        self._lock = threading.Lock()
        super().__init__()

    # -- ConfigurableClass -------------------------------------------------------------
    @property
    def inst_data(self) -> Any:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {
            "preload": dg.Field(
                [str],
                is_required=False,
                description="Modules the fork server imports once for every run "
                "(default: dagster_corpusmill.launcher.PRELOAD)",
            )
        }

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Mapping[str, Any]) -> WarmRunLauncher:
        return cls(inst_data=inst_data, **config_value)

    # -- launching ---------------------------------------------------------------------
    def _fork_server(self) -> Any:
        with self._lock:
            if self._context is None:
                # The server imports torch and transformers, which read these settings at
                # import (OMP_WAIT_POLICY, the offline switches); it inherits this env.
                prepare_process()
                context = multiprocessing.get_context("forkserver")
                # An import that fails here is skipped by the server; the run imports it.
                context.set_forkserver_preload(self._preload)
                self._context = context
            return self._context

    def launch_run(self, context: LaunchRunContext) -> None:
        from dagster._core.errors import DagsterInvariantViolationError
        from dagster._grpc.types import ExecuteRunArgs
        from dagster._serdes import serialize_value

        run = context.dagster_run
        if run.job_code_origin is None:
            raise DagsterInvariantViolationError(f"run {run.run_id} has no code origin")
        args = ExecuteRunArgs(
            job_origin=run.job_code_origin,
            run_id=run.run_id,
            instance_ref=self._instance.get_ref(),
            set_exit_code_on_failure=True,
        )
        worker = self._fork_server().Process(
            target=_run_worker,
            args=(serialize_value(args), self._preload),
            name=f"dagster-run-{run.run_id[:8]}",
        )
        worker.start()
        with self._lock:
            # Forget finished workers (their exit codes came back through the server).
            self._workers = {k: w for k, w in self._workers.items() if w.is_alive()}
            self._workers[run.run_id] = worker
        self._instance.report_engine_event(
            f"Launched run in a worker forked from the warm run server (pid {worker.pid}).",
            run,
            cls=self.__class__,
        )

    def _worker(self, run_id: str) -> tuple[int | None, bool | None]:
        """The run's worker pid and whether it is alive (None: cannot tell)."""
        with self._lock:
            worker = self._workers.get(run_id)
        if worker is not None and worker.pid is not None:  # launched by this process
            return worker.pid, worker.is_alive()
        pid = worker_pid(self._instance, run_id)  # launched by another process (the daemon)
        if pid is None:
            return None, None
        record = self._instance.get_run_record_by_id(run_id)
        # The worker is forked before the run starts: a pid whose process began after the
        # run's start is a reused pid, not the worker (corpusmill.liveness).
        started = record.start_time if record is not None and record.start_time else time.time()
        return pid, worker_alive(pid, started)

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        pid, alive = self._worker(run_id)
        if pid is None or not alive:
            return False
        os.kill(pid, signal.SIGINT)  # the worker ends the run as CANCELED
        return True

    # -- run monitoring ----------------------------------------------------------------
    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        pid, alive = self._worker(run.run_id)
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "no worker pid recorded yet")
        if alive is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "no /proc to ask")
        if alive:
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(pid))
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"run worker (pid {pid}) is gone", run_worker_id=str(pid)
        )
