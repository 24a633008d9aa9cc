"""Search latency per mode on an ingested store, and the rerank_scores run on it.

    make bench-search   # = CORPUSMILL_DB=./data/bench-search python -m bench.search_latency --ingest

With --ingest it first materialises the whole graph (rerank_scores included) on the
built-in Python docs corpus, twice: the second run shows what reuse leaves to do.
Then it times each search mode over the built-in queries, warm (model loaded).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ingest", action="store_true")
    p.add_argument("--k", type=int, default=10)
    args = p.parse_args()

    from corpusmill.config import Settings
    from corpusmill.model import Model
    from corpusmill.queries import load_queries
    from corpusmill.search import Searcher

    settings = Settings.from_env()
    if args.ingest:
        from app.runs import run_ingest

        for label in ("first", "second"):
            s = run_ingest(["pydoc"], settings, with_rerank=True)
            keep = (
                "documents",
                "chunks",
                "chunks_embedded",
                "tokens_per_s",
                "rerank_scorer",
                "rerank_pairs_scored",
                "rerank_pairs_reused",
                "rerank_rows",
                "seconds",
            )
            print(json.dumps({"ingest": label, **{k: s[k] for k in keep}}), flush=True)

    searcher = Searcher(settings.db, embedder=Model(settings.embedder_spec()))
    queries = [q.text for q in load_queries("")]
    searcher.search(queries[0], k=args.k, mode="hybrid")  # load the model, build FTS index
    rows = searcher.table.count_rows()
    for mode, rerank in (("vector", False), ("fts", False), ("hybrid", False), ("hybrid", True)):
        times = []
        for q in queries:
            t0 = time.perf_counter()
            searcher.search(q, k=args.k, mode=mode, rerank=rerank)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        print(
            json.dumps(
                {
                    "mode": mode + ("+rerank(50)" if rerank else ""),
                    "rows": rows,
                    "p50_ms": round(statistics.median(times), 1),
                    "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
