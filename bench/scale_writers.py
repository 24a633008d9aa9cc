"""Two writers on disjoint shard ranges: at the same time against one after the other.

Each writer is its own process (its own model load, as two Dagster runs would be) that
ingests a SciFact slice restricted to half of the 16 shards into one store. "serialised"
runs the halves one after the other (what the store-wide pool and lock forced before);
"concurrent" starts both at once (per-shard locks and run-queue limits let them). Same
texts, fresh store per mode, side by side in one invocation. Prints JSON; --out writes it.

    .venv/bin/python bench/scale_writers.py --docs 400 [--s3] [--out docs/results/x.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

HALVES = ("first", "second")


def scifact_slice(n_docs: int, dest: Path) -> Path:
    from corpusmill.config import DEFAULT_EVAL_DATA

    src = Path(DEFAULT_EVAL_DATA) / "corpus.jsonl"
    with src.open() as f, dest.open("w") as out:
        for i, line in enumerate(f):
            if i >= n_docs:
                break
            out.write(line)
    return dest


def writer(corpus: str, uri: str, options: dict, half: str, threads: int, q) -> None:
    import torch

    from corpusmill.config import Settings, prepare_process

    prepare_process()
    torch.set_num_threads(threads)
    import dagster as dg

    from app.runs import run_ingest
    from corpusmill.ids import ALL_PARTITIONS

    parts = ALL_PARTITIONS[:8] if half == "first" else ALL_PARTITIONS[8:]
    t0 = time.perf_counter()
    with dg.DagsterInstance.ephemeral() as instance:
        s = run_ingest(
            [f"scifact={corpus}"],
            Settings(db=uri, storage_options=options),
            partitions=parts,
            instance=instance,
        )
    q.put({"half": half, "seconds": time.perf_counter() - t0, "chunks": s["chunks"]})


def run_mode(mode: str, corpus: Path, uri: str, options: dict) -> dict:
    from corpusmill.config import Settings
    from corpusmill.model import Model
    from corpusmill.store import Store

    # One writer creates the tables before two run at once (Store._create says why).
    Store(uri, options).create_tables(Model(Settings().embedder_spec()).card)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    # Concurrent writers get one core each, serialised ones both cores: the fair split.
    threads = 1 if mode == "concurrent" else 2
    procs = [
        ctx.Process(target=writer, args=(str(corpus), uri, options, h, threads, q)) for h in HALVES
    ]
    t0 = time.perf_counter()
    if mode == "concurrent":
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    else:
        for p in procs:
            p.start()
            p.join()
    wall = time.perf_counter() - t0
    results = [q.get() for _ in procs]
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    ids = Store(uri, options).scan("embeddings", ["chunk_id"])["chunk_id"].to_pylist()
    return {
        "mode": mode,
        "wall_seconds": round(wall, 2),
        "writers": {r["half"]: round(r["seconds"], 2) for r in results},
        "rows": len(ids),
        "distinct_chunk_ids": len(set(ids)),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=400)
    ap.add_argument("--s3", action="store_true", help="store on moto's S3 on 127.0.0.1")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    from tools.local_s3 import LocalS3

    with tempfile.TemporaryDirectory() as tmp, LocalS3() as s3:
        corpus = scifact_slice(args.docs, Path(tmp) / "scifact.jsonl")
        out = {"docs": args.docs, "storage": "s3 (moto, 127.0.0.1)" if args.s3 else "local"}
        for mode in ("serialised", "concurrent"):
            if args.s3:
                uri, options = s3.uri(f"writers-{mode}"), s3.storage_options
            else:
                uri, options = str(Path(tmp) / f"db-{mode}"), {}
            out[mode] = run_mode(mode, corpus, uri, options)
        out["speedup"] = round(
            out["serialised"]["wall_seconds"] / out["concurrent"]["wall_seconds"], 2
        )
    print(json.dumps(out))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
