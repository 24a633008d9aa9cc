"""The Ray path against the local path, side by side, and the cost of a commit on S3.

One invocation, in a private network namespace (Ray and moto on loopback only):
- the same SciFact slice ingested into a fresh s3:// prefix by the local path, by Ray with
  1 worker and by Ray with 2 workers (wall time of the whole run, engine tokens/s,
  per-worker tokens/s, model loads, commit seconds); Ray's start-up is timed on its own;
- the driver's commit (`Store.commit_fragments`) of N pre-written rows, for several N.

    python -m tools.netns -- .venv/bin/python bench/scale_bench.py --docs 300 --out x.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpusmill.config import Settings, prepare_process  # noqa: E402
from tools.scale_demo import ingest, scifact_slice, stored  # noqa: E402


def commit_costs(s3, sizes: list[int], dim: int = 384) -> list[dict]:
    import numpy as np
    import pyarrow as pa

    from corpusmill.model.card import ModelCard
    from corpusmill.store import Store

    out = []
    card = ModelCard("bench/model", "r", dim, "mean", True, 256)
    for n in sizes:
        store = Store(s3.uri(f"commit-{n}"), s3.storage_options)
        table = store.ensure_embeddings(card)
        schema = pa.schema(list(table.schema))
        rng = np.random.default_rng(0)
        cols = {
            f.name: pa.array([f"{f.name}-{i}" for i in range(n)])
            for f in schema
            if f.type == pa.string()
        }
        cols.update({f.name: pa.array([0] * n, f.type) for f in schema if f.type == pa.int32()})
        flat = pa.array(rng.standard_normal(n * dim).astype("float32"))
        cols["vector"] = pa.FixedSizeListArray.from_arrays(flat, dim)
        rows = pa.table({f.name: cols[f.name] for f in schema}).cast(schema)
        snapshot = store.snapshot("embeddings")
        t0 = time.perf_counter()
        frags = snapshot.write_fragments(rows, max_rows_per_file=4096)
        write_s = time.perf_counter() - t0
        key, version = f"bench-{n}", snapshot.version
        result = store.commit_fragments("embeddings", frags, None, key, version)
        # A second commit of the same run key: what the replay check costs.
        replay = store.commit_fragments("embeddings", frags, None, key, version)
        out.append(
            {
                "rows": n,
                "fragments": len(frags),
                "write_seconds": round(write_s, 3),
                "commit_seconds": round(result.seconds, 3),
                "replay_check_seconds": round(replay.seconds, 3),
            }
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--commit-sizes", default="1000,10000,50000")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    prepare_process()
    import ray

    from corpusmill.scale.cluster import ray_cluster
    from tools.local_s3 import LocalS3

    base = Settings.from_env()
    result: dict = {"docs": args.docs, "machine_note": "2 cores shared with other work"}
    with tempfile.TemporaryDirectory() as tmp, LocalS3() as s3:
        corpus = scifact_slice(args.docs, Path(tmp) / "scifact.jsonl", base.eval_data)
        runs = []
        t0 = time.perf_counter()
        with ray_cluster():
            result["ray_start_seconds"] = round(time.perf_counter() - t0, 2)
            result["ray_cpus"] = ray.cluster_resources().get("CPU")
            # local runs first and last: the first run in the process also pays one-off
            # costs (imports, the tokenizer's first load), the last one shows their size.
            for name, executor, workers in (
                ("local", "local", 1),
                ("ray-1", "ray", 1),
                ("ray-2", "ray", 2),
                ("local-again", "local", 1),
            ):
                settings = Settings(
                    db=s3.uri(f"bench-{name}"),
                    storage_options=s3.storage_options,
                    executor=executor,
                    ray_workers=workers,
                    model=base.model,
                )
                t1 = time.perf_counter()
                s = ingest(corpus, settings)
                rows, distinct = stored(settings)
                runs.append(
                    {
                        "path": name,
                        "seconds": round(time.perf_counter() - t1, 2),
                        "chunks": s["chunks"],
                        "rows": rows,
                        "distinct_chunk_ids": distinct,
                        "tokens": s["tokens"],
                        "tokens_per_s": s["tokens_per_s"],
                        "tokens_per_s_worker_mean": s["tokens_per_s_worker_mean"],
                        "model_loads": s["model_loads"],
                        "commit_seconds": s["commit_seconds"],
                        "input_bytes_shipped": s["input_bytes_shipped"],
                    }
                )
                print(json.dumps(runs[-1]), flush=True)
        result["runs"] = runs
        sizes = [int(x) for x in args.commit_sizes.split(",") if x]
        result["commit_cost"] = commit_costs(s3, sizes)
    print(json.dumps(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
