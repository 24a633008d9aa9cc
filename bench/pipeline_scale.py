"""End-to-end `ingest` against the engine alone as the corpus grows (issue 4's pipeline ratio).

For each size N (SciFact documents): one `run_ingest` into a fresh store, then, in the same
process with the same resident model, the engine alone on exactly the chunk texts that
run stored. Prints one line per size and a JSON summary as the last line, with where the
ingest's seconds went (`steps_seconds`, from the run's event log: each step from its start
to its success, and `before_steps` from the call to the first step: definitions, resources).

    .venv/bin/python -m bench.pipeline_scale --sizes 150,1000
    .venv/bin/python -m bench.pipeline_scale --sizes 1000 --launched --repeat 3

`--launched` launches the `ingest` job through dagster.yaml's run launcher (the warm one:
dagster_corpusmill/launcher.py), as the daemon launches a sensor's or the UI's run, on an
instance of its own; ingest is then the run's own seconds, RUN_START to RUN_SUCCESS, as
the UI shows them, and `launch_seconds` the wait from launch to RUN_START. A first run of
`--first-docs` documents starts the fork server and is reported apart (`first_run`): the
one run after a daemon starts that pays the imports.

`--repeat K` ingests each size K times; from the second on, the engine alone is timed on
both sides of the ingest (after the one before it and after it, on the same texts) and
the ratio is taken against the mean of the two (`ratio_bracketed`). The JSON's
`pipeline_vs_engine_median` is the median over every run.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

from bench.corpus_texts import SCIFACT

ROOT = Path(__file__).resolve().parents[1]

warnings.filterwarnings("ignore")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="150,1000")
    ap.add_argument("--corpus", default=str(SCIFACT))
    ap.add_argument(
        "--warm",
        action="store_true",
        help="import torch and lancedb before the ingest's clock starts, as a resident "
        "process (`corpusmill serve`, a warm daemon) has them; their seconds are reported "
        "as imports_seconds. Default: the ingest pays them, as a fresh `corpusmill ingest`",
    )
    ap.add_argument(
        "--launched",
        action="store_true",
        help="launch each ingest through the instance's run launcher (dagster.yaml)",
    )
    ap.add_argument("--first-docs", type=int, default=10)
    ap.add_argument(
        "--dagster-event-log",
        action="store_true",
        help="with --launched: Dagster's own SQLite event log instead of dagster.yaml's "
        "(dagster_corpusmill/event_log.py), to compare the two",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="ingest each size this many times, each into a fresh store and followed by the "
        "engine alone: one ratio per pair, so a slow moment of a shared host shows as spread",
    )
    args = ap.parse_args()

    import dagster as dg

    from app.runs import run_ingest
    from corpusmill.config import Settings
    from corpusmill.model import Model
    from corpusmill.store import Store

    imports_s = 0.0
    if args.warm:
        t0 = time.perf_counter()
        import lancedb  # noqa: F401
        import torch  # noqa: F401

        imports_s = time.perf_counter() - t0
    settings = Settings.from_env()
    model = Model(settings.embedder_spec())  # the engine alone, on the run's own chunks
    lines = Path(args.corpus).read_text().splitlines()
    results = []
    launcher = Launched(settings, args.dagster_event_log) if args.launched else None
    first_run = None
    if launcher is not None:
        first = launcher.ingest(lines[: args.first_docs])
        first_run = {k: first[k] for k in ("documents", "tokens", "seconds", "launch_seconds")}
        print(f"first run (starts the fork server): {json.dumps(first_run)}", flush=True)
    sizes = [int(x) for x in args.sizes.split(",")]
    engine_before: dict[int, float] = {}  # size -> the engine's seconds after the last ingest
    for n in [size for size in sizes for _ in range(args.repeat)]:
        work = Path(tempfile.mkdtemp(prefix=f"pipeline-{n}-"))
        subset = work / "corpus.jsonl"
        subset.write_text("\n".join(lines[:n]) + "\n")
        instance = dg.DagsterInstance.ephemeral()
        called = time.time()
        if launcher is not None:
            summary = launcher.ingest(lines[:n])
            instance, called, db = launcher.instance, summary["started"], launcher.db
        else:
            db = str(work / "db")
            summary = run_ingest(
                [f"scifact={subset}"], settings.with_overrides({"db": db}), instance=instance
            )
        texts = Store(db).scan("chunks", ["text"])["text"].to_pylist()
        model.load()
        model.encode(texts[:32])
        t0 = time.perf_counter()
        _, stats = model.encode(texts)
        engine_after = time.perf_counter() - t0
        # A repeated size is bracketed: the engine timed after the ingest before this one
        # (same texts) and after this one, so a host that slows down or speeds up during
        # the pair moves both sides of the ratio.
        before = engine_before.get(n)
        engine_s = engine_after if before is None else (before + engine_after) / 2
        engine_before[n] = engine_after
        tokens = summary["tokens"]
        row = {
            "docs": n,
            "warm": args.warm,
            "launched": args.launched,
            "launch_seconds": summary.get("launch_seconds"),
            "imports_seconds": round(imports_s, 2),
            "tokens": tokens,
            "ingest_seconds": summary["seconds"],
            "model_load_seconds": summary["model_load_seconds"],
            "engine_seconds": round(engine_s, 2),
            "engine_seconds_before": None if before is None else round(before, 2),
            "engine_seconds_after": round(engine_after, 2),
            "pipeline_tokens_per_s": round(tokens / summary["seconds"], 1),
            "pipeline_without_load_tokens_per_s": round(
                tokens / (summary["seconds"] - summary["model_load_seconds"]), 1
            ),
            "embed_stage_tokens_per_s": summary["tokens_per_s"],
            "engine_tokens_per_s": round(stats.real_tokens / engine_s, 1),
            "ratio_bracketed": before is not None,
            "steps_seconds": step_seconds(instance, summary["run_id"], called),
        }
        row["pipeline_vs_engine"] = round(
            row["pipeline_tokens_per_s"] / row["engine_tokens_per_s"], 3
        )
        row["pipeline_without_load_vs_engine"] = round(
            row["pipeline_without_load_tokens_per_s"] / row["engine_tokens_per_s"], 3
        )
        results.append(row)
        print(
            f"{n:>6} docs {tokens:>9,} tokens: ingest {summary['seconds']:.1f}s "
            f"(load {summary['model_load_seconds']:.1f}s), engine {engine_s:.1f}s; "
            f"pipeline/engine {row['pipeline_vs_engine']:.2f}, without load {row['pipeline_without_load_vs_engine']:.2f}",
            flush=True,
        )
    out = {"load_avg_1m": os.getloadavg()[0], "runs": results}
    out["pipeline_vs_engine_median"] = statistics.median(r["pipeline_vs_engine"] for r in results)
    if first_run is not None:
        out["first_run"] = first_run
    print(json.dumps(out))
    return 0


class Launched:
    """Ingest runs launched through the run launcher of the repo's dagster.yaml, on an
    instance of their own, into one store emptied before each run. The run workers take
    their settings from this process's environment, as the daemon's runs take the
    daemon's (the fork server keeps the environment it started with)."""

    def __init__(self, settings, dagster_event_log: bool = False) -> None:
        import dagster as dg
        import yaml
        from dagster._core.definitions.reconstruct import (
            ReconstructableJob,
            ReconstructableRepository,
        )

        from definitions import build_definitions

        work = Path(tempfile.mkdtemp(prefix="pipeline-launched-"))
        (work / "home").mkdir()
        config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
        if dagster_event_log:
            del config["event_log_storage"]
        (work / "home" / "dagster.yaml").write_text(yaml.safe_dump(config))
        self.db = str(work / "db")
        self.corpus = work / "corpus.jsonl"
        os.environ["CORPUSMILL_DB"] = self.db
        os.environ["DAGSTER_HOME"] = str(work / "home")  # as the daemon's runs see it
        self.instance = dg.DagsterInstance.from_config(str(work / "home"))
        repo = ReconstructableRepository.for_file(str(ROOT / "definitions.py"), "defs", str(ROOT))
        self.origin = ReconstructableJob(repo, "ingest").get_python_origin()
        self.job = build_definitions(settings.with_overrides({"db": self.db})).resolve_job_def(
            "ingest"
        )

    def ingest(self, lines: list[str]) -> dict:
        import shutil

        import dagster as dg

        from app.runs import LoggedRun, summarise
        from assets.partitions import partition_range_tags
        from corpusmill.ids import ALL_PARTITIONS

        shutil.rmtree(self.db, ignore_errors=True)
        self.corpus.write_text("\n".join(lines) + "\n")
        run = self.instance.create_run_for_job(
            job_def=self.job,
            run_config={
                "ops": {
                    "raw_corpus": {"config": {"sources": [f"scifact={self.corpus}"]}},
                    "chunked_documents": {"config": {}},
                }
            },
            tags=partition_range_tags(ALL_PARTITIONS),
            job_code_origin=self.origin,
        )
        launched = time.time()
        self.instance.launch_run(run.run_id, workspace=None)
        while True:
            record = self.instance.get_run_record_by_id(run.run_id)
            assert record is not None
            if record.dagster_run.is_finished:
                break
            time.sleep(0.2)
        if record.dagster_run.status != dg.DagsterRunStatus.SUCCESS:
            raise SystemExit(f"run {run.run_id} ended {record.dagster_run.status}")
        assert record.start_time is not None and record.end_time is not None
        seconds = record.end_time - record.start_time
        summary = summarise(LoggedRun(self.instance, run.run_id), round(seconds, 2))
        summary.update(
            started=record.start_time, launch_seconds=round(record.start_time - launched, 2)
        )
        return summary


def step_seconds(instance, run_id: str, called: float) -> dict[str, float]:
    """Each step's seconds from its STEP_START to its STEP_SUCCESS (or failure) in the run's
    event log, and `before_steps`: from the `run_ingest` call to the first step's start."""
    import dagster as dg

    started: dict[str, float] = {}
    seconds: dict[str, float] = {}
    ends = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or not event.step_key:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            started[event.step_key] = entry.timestamp
        elif event.event_type in ends and event.step_key in started:
            seconds[event.step_key] = round(entry.timestamp - started[event.step_key], 2)
    if started:
        seconds["before_steps"] = round(min(started.values()) - called, 2)
    return seconds


if __name__ == "__main__":
    sys.exit(main())
