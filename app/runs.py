"""Run the asset graph in-process through Dagster: what `corpusmill ingest` and the tests use.

There is no second graph: this executes the `ingest` job of `build_definitions(settings)`
(the builder `definitions.py` calls for the UI) for a range of shards in one run (so the
model is loaded once), and summarises the metadata. The run is recorded under the job name
`ingest`, so a CLI run reads in the UI like one launched there.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import dagster as dg

from assets.partitions import partition_range_tags
from assets.shard_metadata import RUN_PREFIX
from corpusmill.config import Settings, absolute_home
from corpusmill.engine.progress import PROGRESS_EXTRA, Progress, ProgressCallback
from corpusmill.ids import ALL_PARTITIONS
from corpusmill.queries import load_queries
from definitions import build_definitions


def instance_for(settings: Settings) -> dg.DagsterInstance:
    """The persistent instance at `settings.dagster_home` (DAGSTER_HOME) when set, so the
    runs show up in the UI; otherwise a throwaway one."""
    if settings.dagster_home:
        home = absolute_home(settings.dagster_home)
        os.makedirs(home, exist_ok=True)
        return dg.DagsterInstance.from_config(home)  # what DagsterInstance.get() opens
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
    settings: Settings,
    *,
    partitions: Sequence[str] = ALL_PARTITIONS,
    instance: dg.DagsterInstance | None = None,
    corpus_config: dict[str, Any] | None = None,
    chunk_config: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    log_level: str = "WARNING",
    with_rerank: bool = False,
    rerank_config: dict[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    progress_every_s: float | None = None,
    on_commit: Callable[[str], None] | None = None,
    job: str = "ingest",
) -> dict[str, Any]:
    """Execute the `ingest` job (raw_corpus -> chunked_documents -> embeddings ->
    live_generation, with rerank_scores when `with_rerank`) of the graph for `settings`,
    for `sources` over `partitions` in one run; the `*_config` dicts are the run's asset
    config, as the launchpad would give it. `job="build_generation"` runs that job instead
    (no sources read: the configured model's generation from the stored documents).
    `progress` hears the embeddings step's progress; `on_commit` goes to the run's store
    (tests). Returns a summary dict.

    A failed step raises its own error (the CLI turns it into one line and an exit code);
    a failed blocking check is not a crash (the data is written but wrong, and what comes
    after it was skipped): it is reported, `success` false, with the checks' outcomes."""
    t0 = time.perf_counter()
    if with_rerank:  # its queries read now, not after the embeddings: a bad file stops here
        load_queries((rerank_config or {}).get("queries") or settings.queries)
    ops: dict[str, Any] = {"chunked_documents": {"config": dict(chunk_config or {})}}
    if job == "ingest":
        ops["raw_corpus"] = {"config": {"sources": list(sources), **(corpus_config or {})}}
    if progress_every_s is not None:
        ops["embeddings"] = {"config": {"progress_every_s": progress_every_s}}
    if with_rerank:
        ops["rerank_scores"] = {"config": dict(rerank_config or {})}
    loggers = {"console": dg.colored_console_logger.configured({"log_level": log_level})}
    if progress is not None:
        loggers["progress"] = progress_logger(progress)
    defs = build_definitions(
        settings, loggers=loggers, ingest_with_rerank=with_rerank, on_commit=on_commit
    )
    instance = instance or dg.DagsterInstance.ephemeral()
    run_id = str(uuid.uuid4())  # known before the run, to read its log if it stops early
    try:
        result: Any = defs.resolve_job_def(job).execute_in_process(
            # A logger runs only when the run config names it.
            run_config={"ops": ops, "loggers": {name: {} for name in loggers}},
            instance=instance,
            run_id=run_id,
            tags={**partition_range_tags(partitions), **(tags or {})},
        )
    except dg.DagsterError:
        # A step's own error is raised as itself; a DagsterError comes from Dagster, and
        # one that follows a failed blocking check is that check stopping the run.
        result = LoggedRun(instance, run_id)
        if not result.failed_blocking_checks():
            raise
    return summarise(result, time.perf_counter() - t0)


class LoggedRun:
    """What `summarise` reads of a run result, from the instance's event log."""

    success = False

    def __init__(self, instance: dg.DagsterInstance, run_id: str) -> None:
        self.run_id = run_id
        self.all_events = [r.dagster_event for r in instance.all_logs(run_id) if r.dagster_event]

    def get_asset_materialization_events(self) -> list:
        return [
            e for e in self.all_events if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
        ]

    def failed_blocking_checks(self) -> list[str]:
        return [
            e.asset_check_evaluation_data.check_name
            for e in self.all_events
            if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
            and not e.asset_check_evaluation_data.passed
            and e.asset_check_evaluation_data.blocking
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
    live = by_asset.get("live_generation", {})
    # Every quarantine of the run, by stage: documents at reading, chunks at embedding.
    by_stage = {"source": docs.get("quarantined", 0), "embed": emb.get("chunks_failed", 0)}
    samples = [docs.get("quarantine_sample", ""), emb.get("quarantine_sample", "")]
    failure = nothing_embedded(emb)
    return {
        "success": result.success and not failure,
        "failure": failure,
        "run_id": result.run_id,
        "documents": docs.get("documents", 0),
        "documents_new": docs.get("new", 0),
        "documents_changed": docs.get("changed", 0),
        "documents_deleted": docs.get("deleted", 0),
        "quarantined": sum(by_stage.values()),
        "quarantined_by_stage": by_stage,
        "chunks": chunks.get("chunks_total", 0),
        "chunks_embedded": emb.get("chunks_embedded", 0),
        "chunks_reused": emb.get("chunks_reused", 0),
        # Damage found in stored vectors and healed by this run (issue 27): never reused.
        "vectors_damaged": emb.get("vectors_damaged", 0),
        "vectors_repaired": emb.get("vectors_repaired", 0),
        "vectors_damaged_sample": emb.get("vectors_damaged_sample", ""),
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
        "generation": emb.get("generation", ""),
        "generations_synced": emb.get("generations_synced", ""),
        "live_generation": live.get("live_generation", ""),
        "promoted": bool(live.get("switched", False)),
        "promotion_refused": live.get("refused", "no"),
        "checks": _checks(result),
        "quarantine_sample": "\n".join(x for x in samples if x and x != "none"),
        "seconds": round(seconds, 2),
    }


def nothing_embedded(emb: dict[str, Any]) -> str:
    """Why a run that embedded nothing failed, or "": every chunk it had to embed was
    quarantined at the embed stage. Every input failing at once points at the model (its
    weights give NaN, its dimension is wrong), not at the inputs."""
    failed = emb.get("chunks_failed", 0)
    if not failed or emb.get("chunks_embedded", 0):
        return ""
    return (
        f"nothing could be embedded: all {failed} chunks to embed were quarantined at the "
        f"embed stage; the model ({emb.get('model_id', '?')}) is the likely cause: check "
        "CORPUSMILL_MODEL"
    )
