"""End-to-end `ingest` against the engine alone as the corpus grows (issue 4's pipeline ratio).

For each size N (SciFact documents): one `run_ingest` into a fresh store, then, in the same
process with the same resident model, the engine alone on exactly the chunk texts that
run stored. Prints one line per size and a JSON summary as the last line, with where the
ingest's seconds went (`steps_seconds`, from the run's event log: each step from its start
to its success, and `before_steps` from the call to the first step: definitions, resources).

    .venv/bin/python -m bench.pipeline_scale --sizes 150,1000
"""

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

from bench.corpus_texts import SCIFACT

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
    for n in [int(x) for x in args.sizes.split(",")]:
        work = Path(tempfile.mkdtemp(prefix=f"pipeline-{n}-"))
        subset = work / "corpus.jsonl"
        subset.write_text("\n".join(lines[:n]) + "\n")
        instance = dg.DagsterInstance.ephemeral()
        called = time.time()
        summary = run_ingest(
            [f"scifact={subset}"],
            settings.with_overrides({"db": str(work / "db")}),
            instance=instance,
        )
        texts = Store(str(work / "db")).scan("chunks", ["text"])["text"].to_pylist()
        model.load()
        model.encode(texts[:32])
        t0 = time.perf_counter()
        _, stats = model.encode(texts)
        engine_s = time.perf_counter() - t0
        tokens = summary["tokens"]
        row = {
            "docs": n,
            "warm": args.warm,
            "imports_seconds": round(imports_s, 2),
            "tokens": tokens,
            "ingest_seconds": summary["seconds"],
            "model_load_seconds": summary["model_load_seconds"],
            "engine_seconds": round(engine_s, 2),
            "pipeline_tokens_per_s": round(tokens / summary["seconds"], 1),
            "pipeline_without_load_tokens_per_s": round(
                tokens / (summary["seconds"] - summary["model_load_seconds"]), 1
            ),
            "embed_stage_tokens_per_s": summary["tokens_per_s"],
            "engine_tokens_per_s": round(stats.real_tokens / engine_s, 1),
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
    print(json.dumps({"load_avg_1m": os.getloadavg()[0], "runs": results}))
    return 0


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
