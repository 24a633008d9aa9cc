"""The warm run launcher (dagster_corpusmill/launcher.py) with a real Dagster instance on disk:
runs forked from its fork server succeed, find the preloaded modules imported, can be
terminated from another process (as the webserver does) and are reported dead when their
worker is killed. The jobs here are small Dagster jobs, not the corpus graph (the daemon
tests run that through this launcher: dagster.yaml)."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.launcher import WorkerStatus

from dagster_corpusmill.launcher import PRELOAD, WarmRunLauncher, worker_pid
from tests.waiting import wait_for
from tests.warm_jobs import waiting_job

# A module no run imports on its own, so finding it imported proves the server preloaded it.
MARKER = "tokenizers"


@pytest.fixture
def instance(tmp_path):
    overrides = {
        "run_launcher": {
            "module": "dagster_corpusmill.launcher",
            "class": "WarmRunLauncher",
            "config": {"preload": [MARKER]},
        }
    }
    with dg.instance_for_test(temp_dir=str(tmp_path), overrides=overrides) as inst:
        yield inst


def _launch(instance, seconds: float) -> str:
    recon = dg.reconstructable(waiting_job)
    run = instance.create_run_for_job(
        job_def=waiting_job,
        run_config={"ops": {"wait": {"config": {"seconds": seconds}}}},
        job_code_origin=recon.get_python_origin(),
    )
    instance.launch_run(run.run_id, workspace=None)
    return run.run_id


def _status(instance, run_id: str) -> dg.DagsterRunStatus:
    return instance.get_run_by_id(run_id).status


def _log(instance, run_id: str) -> str:
    lines = []
    for entry in instance.all_logs(run_id):
        lines.append(str(entry.message))
        event = entry.dagster_event
        if event is not None and event.event_type == dg.DagsterEventType.ENGINE_EVENT:
            error = event.engine_event_data.error
            lines.append(error.to_string() if error else "")
    return "\n".join(lines)


def _started_worker(instance, run_id: str) -> int:
    wait_for(
        lambda: (
            _status(instance, run_id) == dg.DagsterRunStatus.STARTED
            and worker_pid(instance, run_id)
        ),
        60,
        "the run STARTED in its worker",
    )
    pid = worker_pid(instance, run_id)
    assert pid is not None
    return pid


@pytest.mark.slow
def test_a_run_forks_from_the_warm_server_and_succeeds(instance):
    assert isinstance(instance.run_launcher, WarmRunLauncher)
    run_id = _launch(instance, seconds=0.0)
    wait_for(lambda: _status(instance, run_id).name in ("SUCCESS", "FAILURE"), 60, "run ends")
    assert _status(instance, run_id) == dg.DagsterRunStatus.SUCCESS, _log(instance, run_id)
    warm = [
        e.dagster_event.engine_event_data.metadata["preloaded"]
        for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
        if "preloaded" in (e.dagster_event.engine_event_data.metadata or {})
    ]
    assert [getattr(m, "value", m) for m in warm] == [MARKER]
    pid = worker_pid(instance, run_id)
    assert pid not in (None, os.getpid())


@pytest.mark.slow
def test_another_process_terminates_a_run_and_it_ends_canceled(instance):
    run_id = _launch(instance, seconds=120.0)
    _started_worker(instance, run_id)
    # The webserver's launcher: same instance on disk, no handle on the worker process.
    with dg.DagsterInstance.from_ref(instance.get_ref()) as webserver:
        assert webserver.run_launcher.terminate(run_id) is True
    wait_for(lambda: _status(instance, run_id) == dg.DagsterRunStatus.CANCELED, 60, "run CANCELED")


@pytest.mark.slow
def test_a_killed_worker_is_reported_failed_to_run_monitoring(instance):
    run_id = _launch(instance, seconds=120.0)
    pid = _started_worker(instance, run_id)
    run = instance.get_run_by_id(run_id)
    assert instance.run_launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
    os.kill(pid, signal.SIGKILL)
    with dg.DagsterInstance.from_ref(instance.get_ref()) as monitor:  # the daemon's view
        wait_for(
            lambda: monitor.run_launcher.check_run_worker_health(run).status == WorkerStatus.FAILED,
            30,
            "the dead worker reported",
        )
    assert instance.run_launcher.check_run_worker_health(run).status == WorkerStatus.FAILED


def test_preloading_starts_no_thread_and_imports_no_lancedb():
    """A thread in the fork server would be copied into every run without running (lancedb
    starts one at import): every module in PRELOAD must import without one."""
    code = (
        "import importlib, sys, threading\n"
        f"for name in {list(PRELOAD)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(threading.active_count(), 'lancedb' in sys.modules)\n"
    )
    assert _printed_by(code) == ["1", "False"]


def _printed_by(code: str, **env: str) -> list[str]:
    """What `code` prints, run by a fresh interpreter in the checkout with `env` added."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, **env},
    ).stdout.split()


def test_the_server_builds_the_recorded_kernels_without_a_thread(tiny_embedder_path, tmp_path):
    """The last preloaded module runs the shapes earlier runs recorded (kernel_shapes.py) on
    one thread: OpenMP starts no worker (threads, not only Python's, are counted in
    /proc), and corpusmill's modules are dropped again so that each run imports them fresh."""
    from corpusmill.model import kernel_shapes, packed_linear

    dtype = "bfloat16" if packed_linear.supported(__import__("torch").bfloat16) else "float32"
    kernel_shapes.record(
        str(tmp_path),
        "key",
        model_dir=tiny_embedder_path,
        kind="embedder",
        dtype=dtype,
        threads=1,
        rows=[64, 96, 256],
        attention=[(12, 7), (36, 40), (120, 9)],
    )
    *first, last = PRELOAD
    code = (
        "import importlib, os, sys\n"
        "tasks = lambda: len(os.listdir('/proc/self/task'))\n"
        f"for name in {first!r}:\n"
        "    importlib.import_module(name)\n"
        "before = tasks()\n"
        f"warm = importlib.import_module({last!r})\n"
        "left = [m for m in sys.modules if m.split('.')[0] == 'corpusmill']\n"
        "print(warm.products, before, tasks(), len(left))\n"
    )
    printed = _printed_by(code, CORPUSMILL_CACHE_DIR=str(tmp_path))
    products, before, after, left = map(int, printed)
    assert products == 3 * 4 + 3 * 2
    assert after == before
    assert left == 0


def test_every_preloaded_module_exists():
    """The fork server skips a module it cannot import without a word: a misspelt or
    renamed one would silently make every run cold again."""
    for name in PRELOAD:
        assert importlib.util.find_spec(name) is not None, name


def test_the_fork_server_inherits_the_process_settings_torch_reads_at_import(monkeypatch):
    """libgomp reads OMP_WAIT_POLICY once, when torch loads, and the server loads torch
    before any run's definitions apply `prepare_process`: the launcher applies it first."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    WarmRunLauncher(preload=[MARKER])._fork_server()
    assert os.environ.get("OMP_WAIT_POLICY") == "PASSIVE"
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
