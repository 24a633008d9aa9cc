"""Run the asset graph in-process through Dagster: what `corpusmill ingest` and the tests use.

There is no second code path: this executes the `ingest` job (assets/jobs.py, the one
`definitions.py` lists) on the same assets, with resources built by the same
`build_resources`, for a range of shards in one run (so the model is loaded once), and
summarises the metadata. The run is recorded under the job name `ingest`, so a CLI run
reads in the UI like one launched there.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import dagster as dg
from dagster._core.errors import DagsterAssetCheckFailedError  # not exported by `dagster`
from dagster._core.utils import make_new_run_id

from assets.checks import EMBEDDINGS_CHECKS
from assets.embeddings import PROGRESS_EXTRA
from assets.jobs import INGEST_ASSETS, ingest_job, ingest_job_with_rerank
from assets.partitions import partition_range_tags
from assets.rerank import rerank_scores
from assets.shard_metadata import RUN_PREFIX
from assets.specs import with_specs
from corpusmill.engine.progress import Progress, ProgressCallback
from corpusmill.ids import ALL_PARTITIONS


def instance_for_cli() -> dg.DagsterInstance:
    """The persistent instance when DAGSTER_HOME is set (runs show up in the UI)."""
    if os.environ.get("DAGSTER_HOME"):
        os.makedirs(os.environ["DAGSTER_HOME"], exist_ok=True)
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


class _ProgressHandler(logging.Handler):
    """Hands the numbers a progress log line carries (`extra=`) to a callback."""

    def __init__(self, callback: ProgressCallback) -> None:
        super().__init__(logging.INFO)
        self.callback = callback

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, PROGRESS_EXTRA, None)
        if fields:
            self.callback(Progress(**fields))


def progress_logger(callback: ProgressCallback) -> dg.LoggerDefinition:
    """A Dagster logger that feeds the embeddings step's progress lines to `callback`.
    A logger, not a side channel, so progress reaches the CLI the way it reaches the UI."""

    @dg.logger(None, description="the embeddings step's progress, for a progress bar")
    def _progress(_init_context) -> logging.Logger:
        log = logging.Logger("corpusmill.progress", logging.INFO)  # private, not registered
        log.addHandler(_ProgressHandler(callback))
        return log

    return _progress


def run_ingest(
    sources: Sequence[str],
    *,
    resources: dict[str, Any],
    partitions: Sequence[str] = ALL_PARTITIONS,
    instance=None,
    corpus_config: dict[str, Any] | None = None,
    chunk_config: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    log_level: str = "WARNING",
    with_rerank: bool = False,
    rerank_config: dict[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    progress_every_s: float | None = None,
) -> dict[str, Any]:
    """Execute the `ingest` job (raw_corpus -> chunked_documents -> embeddings, with
    rerank_scores when `with_rerank`) for `sources` over `partitions` in one run, with
    `resources` as `resources.build_resources(settings)` makes them; `progress` hears the
    embeddings step's progress. Returns a summary dict."""
    t0 = time.perf_counter()
    ops: dict[str, Any] = {
        "raw_corpus": {"config": {"sources": list(sources), **(corpus_config or {})}},
        "chunked_documents": {"config": dict(chunk_config or {})},
    }
    if progress_every_s is not None:
        ops["embeddings"] = {"config": {"progress_every_s": progress_every_s}}
    loggers: dict[str, Any] = {"console": dg.colored_console_logger}
    run_config: dict[str, Any] = {
        "ops": ops,
        "loggers": {"console": {"config": {"log_level": log_level}}},
    }
    if progress is not None:
        loggers["progress"] = progress_logger(progress)
        run_config["loggers"]["progress"] = {}
    job = ingest_job
    if with_rerank:
        job = ingest_job_with_rerank()
        ops["rerank_scores"] = {"config": dict(rerank_config or {})}
    defs = dg.Definitions(
        assets=with_specs([*INGEST_ASSETS, *([rerank_scores] if with_rerank else [])], resources),
        asset_checks=EMBEDDINGS_CHECKS,
        jobs=[job],
        resources=resources,
        loggers=loggers,
    )
    instance = instance or dg.DagsterInstance.ephemeral()
    run_id = make_new_run_id()
    try:
        result: Any = defs.resolve_job_def("ingest").execute_in_process(
            run_config=run_config,
            instance=instance,
            run_id=run_id,
            tags={**partition_range_tags(partitions), **(tags or {})},
        )
    except DagsterAssetCheckFailedError:
        # A blocking check failed: the data is written but wrong, and downstream was
        # skipped. Not a crash: report the run (success false, which check) from its log.
        result = _LoggedRun(instance, run_id)
    return summarise(result, time.perf_counter() - t0)


class _LoggedRun:
    """What `summarise` reads of a run result, from the instance's event log."""

    success = False

    def __init__(self, instance: dg.DagsterInstance, run_id: str) -> None:
        self.run_id = run_id
        self.all_events = [r.dagster_event for r in instance.all_logs(run_id) if r.dagster_event]

    def get_asset_materialization_events(self) -> list:
        return [
            e for e in self.all_events if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
        ]


def _checks(result) -> dict[str, bool]:
    """check name -> passed, for the asset checks the run evaluated."""
    return {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    }


def _values(event) -> dict[str, Any]:
    """An event's metadata as plain values, `run_` prefixes dropped (see assets/shard_metadata.py)."""
    meta = event.event_specific_data.materialization.metadata
    return {k.removeprefix(RUN_PREFIX): getattr(v, "value", v) for k, v in meta.items()}


def summarise(result, seconds: float) -> dict[str, Any]:
    """The run's figures (the materialisations' run-level metadata) as one flat dict."""
    by_asset: dict[str, dict[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        key = event.event_specific_data.materialization.asset_key.to_user_string()
        by_asset[key] = _values(event)
    docs = by_asset.get("raw_corpus", {})
    chunks = by_asset.get("chunked_documents", {})
    emb = by_asset.get("embeddings", {})
    rerank = by_asset.get("rerank_scores", {})
    return {
        "success": result.success,
        "run_id": result.run_id,
        "documents": docs.get("documents", 0),
        "documents_new": docs.get("new", 0),
        "documents_changed": docs.get("changed", 0),
        "documents_deleted": docs.get("deleted", 0),
        "quarantined": docs.get("quarantined", 0),
        "chunks": chunks.get("chunks_total", 0),
        "chunks_embedded": emb.get("chunks_embedded", 0),
        "chunks_reused": emb.get("chunks_reused", 0),
        "rows": emb.get("rows", 0),
        "tokens": emb.get("tokens", 0),
        "pretokenized_items": emb.get("pretokenized_items", 0),
        # Absent when nothing was embedded (no throughput to speak of): 0 here.
        "tokens_per_s": emb.get("tokens_per_s", 0.0),
        "padding_fraction": emb.get("padding_fraction", 0.0),
        "model_load_seconds": emb.get("model_load_seconds", 0.0),
        "model_id": emb.get("model_id", ""),
        "device": emb.get("device", ""),
        "dtype": emb.get("dtype", ""),
        "executor": emb.get("executor", "local"),
        "workers": emb.get("workers", 1),
        "model_loads": emb.get("model_loads", int(bool(emb.get("weights_loaded", False)))),
        "tokens_per_s_worker_mean": emb.get("tokens_per_s_worker_mean", 0.0),
        "commit_seconds": emb.get("commit_seconds", 0.0),
        "input_bytes_shipped": emb.get("input_bytes_shipped", 0),
        "rerank_scorer": rerank.get("scorer", ""),
        "rerank_pairs_scored": rerank.get("pairs_scored", 0),
        "rerank_pairs_reused": rerank.get("pairs_reused", 0),
        "rerank_rows": rerank.get("rows", 0),
        "checks": _checks(result),
        "quarantine_sample": docs.get("quarantine_sample", ""),
        "seconds": round(seconds, 2),
    }
