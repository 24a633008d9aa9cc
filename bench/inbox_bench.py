"""Inbox benchmarks (issue 3): sensor tick over many files, and incremental re-ingest cost.

    python -m bench.inbox_bench tick [--files 10000]
        A tick of the real inbox sensor (build_sensor_context, persistent store) over N files
        already ingested: cold (new code server, nothing cached), warm (stat cache), and after
        touching 1% / deleting / adding files, checking the tick finds exactly those.
        The store is filled with a tiny random 2-layer BERT: a tick never runs the model.

    python -m bench.inbox_bench incremental [--docs 5183] [--model PATH]
        BEIR SciFact abstracts (../shared/eval/scifact) as .txt files in an inbox; ingest from
        scratch, change 1% of the files, then run what the sensor requests; report both wall
        times and their ratio. Default model: the packaged all-MiniLM-L6-v2.

Results are printed and written to bench/out/inbox_<mode>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
import warnings
from pathlib import Path

from bench.corpus_texts import SCIFACT
from tools.tiny_models import save_tiny_embedder

REPO = Path(__file__).resolve().parents[1]
warnings.filterwarnings("ignore")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def settings_for(db: str, model: str | None, **overrides):
    from corpusmill.config import Settings

    return Settings(db=db, model=model or "", **overrides)


def tick(sensor, db: str, instance):
    import dagster as dg

    from corpusmill.store import Store

    ctx = dg.build_sensor_context(instance=instance, resources={"store": Store(db)})
    t0 = time.perf_counter()
    result = sensor(ctx)
    seconds = time.perf_counter() - t0
    requests = [] if isinstance(result, dg.SkipReason) else list(result.run_requests or [])
    counts = json.loads(requests[0].tags["corpusmill/changes"]) if requests else {}
    return seconds, counts, requests


def bench_tick(n_files: int, work: Path) -> dict:
    import dagster as dg

    from app.runs import run_ingest
    from sensors.inbox import build_inbox_sensor

    rng = random.Random(0)
    words = [
        "shard",
        "vector",
        "token",
        "chunk",
        "river",
        "mountain",
        "violin",
        "zebra",
        "comet",
        "harbour",
        "lance",
    ]
    inbox = work / "inbox"
    for i in range(n_files):
        path = inbox / f"d{i % 100:02d}" / f"f{i:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(" ".join(rng.choices(words, k=40)) + f" file {i}")
    db = str(work / "lancedb")
    model = save_tiny_embedder(work / "tiny-embedder")
    t0 = time.perf_counter()
    summary = run_ingest(
        [f"inbox={inbox}"],
        settings_for(db, str(model)),
        chunk_config={"chunk_tokens": 48, "chunk_overlap": 8},
        instance=dg.DagsterInstance.ephemeral(),
    )
    ingest_s = time.perf_counter() - t0
    instance = dg.DagsterInstance.ephemeral()

    # A fresh, empty stat cache.
    sensor = build_inbox_sensor(settings_for(db, str(model), inbox=str(inbox)), name="bench_inbox")
    cold, cold_counts, _ = tick(sensor, db, instance)
    warm, warm_counts, _ = tick(sensor, db, instance)
    files = sorted(inbox.rglob("*.txt"))
    touched = rng.sample(files, n_files // 100)
    for p in touched:
        p.write_text(p.read_text() + " changed")
    for p in rng.sample([f for f in files if f not in touched], 10):
        p.unlink()
    for i in range(10):
        (inbox / "new" / f"n{i}.txt").parent.mkdir(exist_ok=True)
        (inbox / "new" / f"n{i}.txt").write_text(f"a new file {i}")
    changed, changed_counts, requests = tick(sensor, db, instance)
    expect = {"changed": n_files // 100, "deleted": 10, "new": 10}
    return {
        "files": n_files,
        "documents_ingested": summary["documents"],
        "chunks": summary["chunks"],
        "initial_ingest_seconds": round(ingest_s, 1),
        "tick_cold_seconds": round(cold, 3),
        "tick_cold_changes": cold_counts,
        "tick_warm_seconds": round(warm, 3),
        "tick_warm_changes": warm_counts,
        "tick_after_changes_seconds": round(changed, 3),
        "tick_after_changes_found": changed_counts,
        "tick_after_changes_expected": expect,
        "misses_none": changed_counts == expect,
        "shards_requested": requests[0].tags["corpusmill/partitions"].count(",") + 1
        if requests
        else 0,
    }


def bench_incremental(n_docs: int, model: str | None, work: Path) -> dict:
    import dagster as dg

    from app.runs import run_ingest
    from corpusmill.inbox import diff, read_committed, scan_inbox, touched_partitions
    from corpusmill.sources import ReadOptions
    from corpusmill.store import Store

    inbox = work / "inbox"
    inbox.mkdir()
    records = [json.loads(line) for line in SCIFACT.open()][:n_docs]
    for r in records:
        (inbox / f"{r['_id']}.txt").write_text(f"{r['title']}\n\n{r['text']}")
    db = str(work / "lancedb")
    source = [f"inbox={inbox}"]

    def ingest(partitions):
        from corpusmill.ids import ALL_PARTITIONS

        return run_ingest(
            source,
            settings_for(db, model),
            partitions=partitions or ALL_PARTITIONS,
            instance=dg.DagsterInstance.ephemeral(),
        )

    scratch = ingest(None)
    rng = random.Random(1)
    files = sorted(inbox.glob("*.txt"))
    for p in rng.sample(files, len(files) // 100):
        p.write_text(p.read_text() + "\n\nThis abstract was revised.")
    t0 = time.perf_counter()
    changes = diff(
        scan_inbox(inbox, ReadOptions(max_file_bytes=1 << 24)), read_committed(Store(db))
    )
    detect_s = time.perf_counter() - t0
    partitions = touched_partitions(changes)
    incremental = ingest(partitions)
    ratio = scratch["seconds"] / incremental["seconds"]
    return {
        "documents": len(records),
        "model": scratch["model_id"],
        "device": scratch["device"],
        "dtype": scratch["dtype"],
        "scratch_seconds": scratch["seconds"],
        "scratch_chunks_embedded": scratch["chunks_embedded"],
        "scratch_tokens_per_s": scratch["tokens_per_s"],
        "changed_files": len(files) // 100,
        "detect_seconds": round(detect_s, 2),
        "shards_touched": len(partitions),
        "incremental_seconds": incremental["seconds"],
        "incremental_chunks_embedded": incremental["chunks_embedded"],
        "incremental_chunks_reused": incremental["chunks_reused"],
        "incremental_model_load_seconds": incremental["model_load_seconds"],
        "ratio": round(ratio, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["tick", "incremental"])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--docs", type=int, default=5183)
    parser.add_argument(
        "--model", default=None, help="embedder directory (default: packaged MiniLM)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="inbox-bench-") as tmp:
        work = Path(tmp)
        if args.mode == "tick":
            result = bench_tick(args.files, work)
        else:
            result = bench_incremental(args.docs, args.model, work)
    result["date"] = time.strftime("%Y-%m-%d %H:%M")
    result["load_average"] = os.getloadavg()[0]
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"inbox_{args.mode}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
