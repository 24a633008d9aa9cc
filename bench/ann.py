"""Vector search latency and recall@10, flat scan vs the IVF-SQ index corpusmill builds.

    .venv/bin/python -m bench.ann --rows 100000,1000000 --out bench/out/ann.json

Synthetic 384-d unit vectors drawn from a mixture of Gaussians (real embeddings cluster
by topic; uniform random vectors would be the worst case for any ANN index). Queries are
fresh draws from the same mixture. Ground truth is the exact cosine top-10 by numpy.
The index is built with `corpusmill.store.upkeep.ann_index_config`, the same call the
upkeep asset makes, and queried with the same nprobes / refine_factor as `Searcher`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from corpusmill.store.upkeep import ANN_NPROBES, ANN_REFINE_FACTOR, ann_index_config

K = 10


def mixture(rng: np.random.Generator, centers: np.ndarray, n: int, spread: float) -> np.ndarray:
    labels = rng.integers(0, len(centers), n)
    x = centers[labels] + spread * rng.standard_normal((n, centers.shape[1]), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build_table(db, name: str, data: np.ndarray, batch: int = 100_000):
    dim = data.shape[1]

    def part(lo: int, hi: int) -> pa.Table:
        flat = pa.array(data[lo:hi].ravel(), pa.float32())
        return pa.table(
            {
                "id": pa.array(np.arange(lo, hi), pa.int64()),
                "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
            }
        )

    table = db.create_table(name, part(0, min(batch, len(data))), mode="overwrite")
    for lo in range(batch, len(data), batch):
        table.add(part(lo, min(lo + batch, len(data))))
    table.optimize()  # one compacted table, as upkeep leaves it
    return table


def exact_top_k(data: np.ndarray, queries: np.ndarray, k: int = K) -> list[set[int]]:
    truth = []
    for q in queries:
        sims = data @ q
        top = np.argpartition(-sims, k)[:k]
        truth.append(set(top.tolist()))
    return truth


def run_queries(table, queries: np.ndarray, truth, **opts) -> dict:
    latencies, recalls = [], []
    for q, want in zip(queries, truth, strict=True):
        t0 = time.perf_counter()
        search = table.search(q).distance_type("cosine").limit(K).select(["id"])
        if opts.get("flat"):
            search = search.bypass_vector_index()
        else:
            search = search.nprobes(opts["nprobes"])
            if opts.get("refine_factor"):
                search = search.refine_factor(opts["refine_factor"])
        got = search.to_arrow()["id"].to_pylist()
        latencies.append((time.perf_counter() - t0) * 1000)
        recalls.append(len(want & set(got)) / K)
    latencies.sort()
    return {
        "p50_ms": round(statistics.median(latencies), 2),
        "p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 2),
        "recall_at_10": round(float(np.mean(recalls)), 4),
    }


def bench(rows: int, dim: int, n_queries: int, db_dir: Path, seed: int = 0) -> dict:
    import lancedb

    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((1000, dim), dtype=np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    data = mixture(rng, centers, rows, spread=0.06)
    queries = mixture(rng, centers, n_queries, spread=0.06)
    truth = exact_top_k(data, queries)

    shutil.rmtree(db_dir, ignore_errors=True)
    db = lancedb.connect(str(db_dir))
    t0 = time.perf_counter()
    table = build_table(db, "vectors", data)
    write_s = time.perf_counter() - t0
    result: dict = {"rows": rows, "dim": dim, "queries": n_queries, "write_s": round(write_s, 1)}
    result["flat"] = run_queries(table, queries, truth, flat=True)

    config = ann_index_config(rows)
    t0 = time.perf_counter()
    table.create_index("vector", config=config, replace=True)
    result["index"] = {
        "type": "IVF_SQ",
        "num_partitions": config.num_partitions,
        "build_s": round(time.perf_counter() - t0, 1),
    }
    settings = [
        ("ivf_sq nprobes=10", {"nprobes": 10}),
        (
            f"ivf_sq nprobes={ANN_NPROBES} refine={ANN_REFINE_FACTOR} (Searcher default)",
            {"nprobes": ANN_NPROBES, "refine_factor": ANN_REFINE_FACTOR},
        ),
        (f"ivf_sq nprobes={ANN_NPROBES} refine=10", {"nprobes": ANN_NPROBES, "refine_factor": 10}),
    ]
    result["ann"] = {label: run_queries(table, queries, truth, **opts) for label, opts in settings}
    del data
    shutil.rmtree(db_dir, ignore_errors=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="100000,1000000")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--db", default="/tmp/corpusmill-ann-bench")
    p.add_argument("--out", default="bench/out/ann.json")
    args = p.parse_args()
    results = []
    for rows in (int(r) for r in args.rows.split(",")):
        res = bench(rows, args.dim, args.queries, Path(args.db))
        print(json.dumps(res), flush=True)
        results.append(res)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
