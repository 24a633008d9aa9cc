"""inbox_sensor: files dropped, changed or deleted in the inbox (a folder, or an `s3://`
prefix) flow into the store.

Each tick reads the inbox (unchanged files come from a stat cache), reads what the store
has committed for the `inbox` source, and requests ONE run of the `ingest` job over the
shard range the differences touch, so the model loads once per tick whatever the number of
files. The store is the state: a run that was killed leaves its work visibly undone and the
next tick asks for it again; the cursor counts requests and remembers which pending
documents were in failed runs (`corpusmill.inbox.Attempts`): those are held back while the
other changes go first, then tried alone, and one that fails INBOX_ATTEMPTS runs is set
aside (quarantined) until its file changes, so one poison file never stalls the inbox.

Run keys come from content (see `corpusmill.inbox.change_key`), suffixed with the number of
failed or canceled runs for the same changes, so a failed run is retried and a repeated
sighting of the same changes is not. While an inbox run is queued or running, the sensor
waits: that run reads the folder itself and picks up whatever it finds.

(No `from __future__ import annotations` in Dagster modules.)
"""

import dataclasses
import json
import time
from pathlib import Path

import dagster as dg

from assets.partitions import TRIGGER_TAG, partition_range_tags
from corpusmill.config import Settings
from corpusmill.inbox import (
    INBOX_LABEL,
    Attempts,
    StatCache,
    change_key,
    diff,
    read_committed,
    scan_inbox,
)
from corpusmill.inbox import summarise as summarise_changes
from corpusmill.lifecycle.targets import CONFIGURED, served
from corpusmill.liveness import worker_alive
from corpusmill.model import Model
from corpusmill.sources import is_object_uri, source_label
from corpusmill.store import Store
from corpusmill.store.generations import read_registry
from dagster_corpusmill.launcher import worker_pid

CHANGE_TAG = "corpusmill/change"
PARTITIONS_TAG = "corpusmill/partitions"
REQUEST_TAG = "corpusmill/request"  # the run key: how the next tick finds how a run ended
MAX_RUNTIME_TAG = "dagster/max_runtime"  # run monitoring fails a run older than this

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
FAILED = [dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


def _parse_cursor(raw: str | None) -> dict:
    try:
        cursor = json.loads(raw) if raw else {}
    except ValueError:
        cursor = {}
    return cursor if isinstance(cursor, dict) else {}


def build_inbox_sensor(
    settings: Settings,
    *,
    name: str = "inbox_sensor",
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """The inbox sensor for the settings' folder or `s3://` prefix (`inbox`), ticking every
    `sensor_interval` seconds. `build_definitions` builds it; tests build their own over
    temporary folders and prefixes."""
    inbox = settings.inbox
    root = source_label(inbox) if is_object_uri(inbox) else str(Path(inbox).expanduser().resolve())
    interval = settings.sensor_interval
    run_timeout = settings.sensor_run_timeout
    options = settings.read_options()
    cache = StatCache()  # per code-server process: survives between ticks, not restarts

    @dg.sensor(
        name=name,
        job_name="ingest",
        minimum_interval_seconds=interval,
        default_status=default_status,
        description=f"Ingest new, changed and deleted files of {root} (every {interval} s).",
    )
    def inbox_sensor(context: dg.SensorEvaluationContext, store: dg.ResourceParam[Store]):
        cursor = _parse_cursor(context.cursor)
        waiting = _runs_in_flight(context.instance, name, run_timeout)
        if waiting:
            return dg.SkipReason(f"inbox run {waiting[0]} is in flight; it reads the folder itself")

        # Every generation a run keeps in sync must hold a file before it counts as done.
        # A generation another run is building is left to that run (it catches up once
        # the build lets go of its shards): no run per tick meanwhile.
        card = Model(settings.embedder_spec()).card  # the model folder's files, no weights
        served_views = [
            gen.view(store)
            for gen, roles in served(read_registry(store), card)
            if roles != (CONFIGURED,) or not gen.view(store).busy()
        ]
        # The store first: an object whose row carries its signature is not read.
        committed = read_committed(store, INBOX_LABEL, served_views)
        listing = scan_inbox(root, options, cache=cache, committed=committed)
        attempts = Attempts.from_cursor(cursor)
        attempts.settle(*_outcome(context.instance, attempts.last.get("key")))
        changes, set_aside = attempts.plan(diff(listing, committed), listing, committed)
        cursor["attempts"] = attempts.to_cursor()
        timing = (
            f"{listing.files} files ({listing.files_read} read) in {listing.seconds:.2f}s, "
            f"store state in {committed.seconds:.2f}s"
        )
        if not changes:
            held = f"; {len(set_aside)} set aside" if set_aside else ""
            return dg.SensorResult(
                skip_reason=f"inbox in sync{held}: {timing}", cursor=json.dumps(cursor)
            )

        base = change_key(changes, committed.version)
        failed = len(
            context.instance.get_run_records(
                filters=dg.RunsFilter(tags={CHANGE_TAG: base}, statuses=FAILED)
            )
        )
        partitions = sorted({c.partition for c in changes})
        counts = summarise_changes(changes)
        context.log.info(f"inbox changes {counts} in {len(partitions)} shards; {timing}")
        run_key = f"inbox-{base}-{failed}"
        request = dg.RunRequest(
            run_key=run_key,
            run_config={
                "ops": {
                    "raw_corpus": {
                        "config": {
                            "sources": [f"{INBOX_LABEL}={root}"],
                            # The run reads the inbox under the sensor's limits.
                            "max_file_bytes": settings.max_file_bytes,
                            "max_pages": settings.max_pages,
                            "extract_timeout": settings.extract_timeout,
                            "extract_memory_mb": settings.extract_memory_mb,
                            "set_aside": [dataclasses.asdict(a) for a in set_aside],
                        }
                    }
                }
            },
            tags={
                **partition_range_tags(partitions),
                TRIGGER_TAG: name,
                CHANGE_TAG: base,
                REQUEST_TAG: run_key,
                PARTITIONS_TAG: ",".join(partitions),
                MAX_RUNTIME_TAG: str(run_timeout),
                "corpusmill/changes": json.dumps(counts, sort_keys=True),
            },
        )
        # The cursor only moves forward: it counts distinct requests (a repeat of the last
        # key is the same run, which Dagster will not start twice).
        requests = int(cursor.get("requests", 0)) + (cursor.get("last_key") != request.run_key)
        attempts.requested(run_key)
        new_cursor = {
            "requests": requests,
            "last_key": request.run_key,
            "attempts": attempts.to_cursor(),
        }
        return dg.SensorResult(run_requests=[request], cursor=json.dumps(new_cursor))

    return inbox_sensor


def _runs_in_flight(instance: dg.DagsterInstance, sensor_name: str, run_timeout: int) -> list[str]:
    """Ids of this sensor's runs still queued or running. A started run whose worker
    process is gone (the machine crashed with it) is failed here, at once, with the reason
    in its log, so this tick retries its changes; a run older than the run timeout is
    ignored (run monitoring fails it), and the content-derived run key still stops a
    duplicate if it is in fact alive."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(tags={TRIGGER_TAG: sensor_name}, statuses=IN_FLIGHT), limit=10
    )
    now = time.time()
    alive = []
    for record in records:
        run = record.dagster_run
        since = record.start_time or record.create_timestamp.timestamp()
        pid = worker_pid(instance, run.run_id) if run.status in WORKER_STATUSES else None
        if pid is not None and worker_alive(pid, since) is False:
            instance.report_run_failed(
                run,
                message=f"run worker (pid {pid}) is gone: the machine or the process "
                "died; the inbox sensor retries the changes",
            )
            continue
        if now - since < run_timeout:
            alive.append(run.run_id)
    return alive


def _outcome(instance: dg.DagsterInstance, run_key: str | None) -> tuple[str | None, str]:
    """How the run requested under `run_key` ended: ("success" | "failure" | None if it
    has not ended or never ran, the first line of its error)."""
    if not run_key:
        return None, ""
    records = instance.get_run_records(filters=dg.RunsFilter(tags={REQUEST_TAG: run_key}))
    statuses = {r.dagster_run.status for r in records}
    if dg.DagsterRunStatus.SUCCESS in statuses:
        return "success", ""
    failed = [r.dagster_run for r in records if r.dagster_run.status in FAILED]
    if not failed:
        return None, ""
    error = ""
    for entry in instance.all_logs(failed[0].run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        data = entry.dagster_event.step_failure_data if entry.dagster_event else None
        cause = data.error if data is not None else None
        while cause is not None and cause.cause is not None:  # the step's own exception
            cause = cause.cause
        if cause is not None:
            error = " ".join(cause.message.split())[:160]
    return "failure", error


WORKER_STATUSES = (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)
