"""What the Ray driver holds and ships per chunk: `plan_units` on a synthetic chunks table.

The driver plans from ids (chunk id, document id, content hash, row address) and ships
work units of chunk ids; this measures, for N synthetic chunks in a local Lance store
(8 chunks per document, 1,000-character texts, 200 stored token ids each), the plan's
peak Python allocations (tracemalloc), the process's RSS growth across the plan (the
fill's own peak hides the plan's in VmHWM), the plan's time and the
bytes of the units the driver would put into Ray's object store. No Ray, no model.
Each size runs in a fresh process.

    .venv/bin/python bench/scale_plan_memory.py --chunks 100000,400000 [--out x.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402

from corpusmill.ids import ALL_PARTITIONS, chunk_id, content_hash, doc_key  # noqa: E402
from corpusmill.model.card import ModelCard  # noqa: E402
from corpusmill.scale.ray_embed import plan_units  # noqa: E402
from corpusmill.store import Store, chunks_schema  # noqa: E402

PER_DOC = 8


def rss_mb() -> dict[str, float]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            key, value = line.split(":")
            out[key] = int(value.split()[0]) / 1024
    return out


def fill(store: Store, n: int) -> None:
    table = store.ensure("chunks", chunks_schema())
    store.ensure_embeddings(ModelCard("bench/model", "r", 384, "mean", True, 256))
    for start in range(0, n, 50_000):
        rows = []
        for i in range(start, min(n, start + 50_000)):
            doc = f"scifact#{i // PER_DOC:08d}"
            rows.append(
                {
                    "chunk_id": chunk_id(doc, i % PER_DOC, "v1"),
                    "doc_id": doc,
                    "doc_key": doc_key(doc),
                    "source": "scifact",
                    "uri": "corpus.jsonl",
                    "partition": ALL_PARTITIONS[i % 16],
                    "position": i % PER_DOC,
                    "text": "x" * 1000,
                    "content_hash": content_hash(str(i)),
                    "doc_hash": "d",
                    "n_tokens": 200,
                    "chunker": "v1",
                    "input_ids": [1] * 200,
                    "tokenizer": "t",
                }
            )
        table.add(pa.Table.from_pylist(rows, schema=chunks_schema()))


def measure(n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(tmp)
        fill(store, n)
        before = rss_mb()
        tracemalloc.start()
        t0 = time.perf_counter()
        plan = plan_units(store, ALL_PARTITIONS, workers=64, batch_rows=256)
        seconds = time.perf_counter() - t0
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        after = rss_mb()
        units = pa.Table.from_pylist(plan.units)
        return {
            "chunks": n,
            "units": len(plan.units),
            "plan_seconds": round(seconds, 2),
            "python_peak_bytes_per_chunk": round(peak / n),
            "rss_growth_mb": round(after["VmRSS"] - before["VmRSS"], 1),
            "units_bytes_per_chunk": round(units.nbytes / n, 1),
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--chunks", default="100000,400000")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    runs = []
    # Each size in a fresh process, so one size's peak RSS is not the previous one's.
    ctx = mp.get_context("spawn")
    for n in [int(x) for x in args.chunks.split(",") if x]:
        with ctx.Pool(1) as pool:
            runs.append(pool.apply(measure, (n,)))
        print(json.dumps(runs[-1]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
