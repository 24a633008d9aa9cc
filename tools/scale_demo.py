"""`make scale-demo`: a SciFact slice embedded by 2 Ray workers into S3, exactly once.

Starts moto's S3 server and a local Ray cluster (both reachable only on loopback: run it
in a private network namespace, as the Makefile does with `python -m tools.netns`), ingests
the first `--docs` SciFact documents from ../shared/eval/scifact into `s3://…` with
CORPUSMILL_EXECUTOR=ray, and prints a last-line JSON summary.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

from corpusmill.config import Settings, prepare_process


def scifact_slice(n_docs: int, dest: Path, data: str) -> Path:
    with (Path(data) / "corpus.jsonl").open() as f, dest.open("w") as out:
        for i, line in enumerate(f):
            if i >= n_docs:
                break
            out.write(line)
    return dest


def ingest(corpus: Path, settings: Settings) -> dict:
    import dagster as dg

    from app.runs import run_ingest

    with dg.DagsterInstance.ephemeral() as instance:
        return run_ingest([f"scifact={corpus}"], settings, instance=instance)


def stored(settings: Settings) -> tuple[int, int]:
    from corpusmill.store import Store

    ids = Store(settings.db, settings.storage_options).scan("embeddings", ["chunk_id"])
    counts = Counter(ids["chunk_id"].to_pylist())
    return sum(counts.values()), len(counts)


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM): the driver's, not Ray's workers'."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    prepare_process()
    from corpusmill.scale.cluster import ray_cluster
    from tools.local_s3 import LocalS3

    base = Settings.from_env()
    with tempfile.TemporaryDirectory() as tmp, LocalS3() as s3, ray_cluster():
        corpus = scifact_slice(args.docs, Path(tmp) / "scifact.jsonl", base.eval_data)
        settings = Settings(
            db=s3.uri("scale-demo"),
            storage_options=s3.storage_options,
            executor="ray",
            ray_workers=args.workers,
            model=base.model,
        )
        t0 = time.perf_counter()
        summary = ingest(corpus, settings)
        seconds = time.perf_counter() - t0
        driver_rss = peak_rss_mb()
        rows, distinct = stored(settings)
        again = ingest(corpus, settings)
        print(
            f"ingested {summary['documents']} documents into {settings.db} with "
            f"{summary['workers']} Ray workers; a rerun embedded {again['chunks_embedded']}"
        )
        print(
            json.dumps(
                {
                    "storage": settings.db,
                    "workers": summary["workers"],
                    "documents": summary["documents"],
                    "rows": rows,
                    "distinct_chunk_ids": distinct,
                    "model_loads": summary["model_loads"],
                    "tokens": summary["tokens"],
                    "tokens_per_s": summary["tokens_per_s"],
                    "tokens_per_s_worker_mean": summary["tokens_per_s_worker_mean"],
                    "commit_seconds": summary["commit_seconds"],
                    "input_bytes_shipped": summary["input_bytes_shipped"],
                    "driver_peak_rss_mb": driver_rss,
                    "rerun_chunks_embedded": again["chunks_embedded"],
                    "seconds": round(seconds, 2),
                }
            )
        )
    return 0 if summary["success"] and rows == distinct else 1


if __name__ == "__main__":
    raise SystemExit(main())
