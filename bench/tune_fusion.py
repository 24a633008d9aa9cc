"""Choose the convex-fusion weight on SciFact TRAIN queries; report test nDCG@10 once.

    .venv/bin/corpusmill eval                      # builds ./data/eval-scifact (once)
    .venv/bin/python bench/tune_fusion.py --out docs/results/fusion-<date>.json

For every query the vector and full-text lists are fetched once, 1,000 deep (as `make
eval` searches), through `Searcher` on the eval store; each weight on the grid then fuses
those same lists with `corpusmill.search.fusion.fuse`, the function `hybrid` serves with. The
weight with the best mean nDCG@10 over the train qrels (qrels/train.tsv) wins (ties: the
one nearer 0.5). Only then are the test queries (qrels/test.tsv) fused, with that weight and
with RRF, for the record: they never take part in the choice.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from types import SimpleNamespace


def lists_for(searcher, queries: dict[str, str], depth: int, where):
    """{qid: (vector [(chunk_id, score)], fulltext [...], {chunk_id: doc_id})}."""
    ids = list(queries)
    vectors = searcher.embed_queries([queries[q] for q in ids])
    out = {}
    for qid, vec in zip(ids, vectors, strict=True):
        v = searcher.vector(queries[qid], depth, where, qvec=list(vec))
        f = searcher.fulltext(queries[qid], depth, where)
        out[qid] = (
            [(h.chunk_id, h.score) for h in v],
            [(h.chunk_id, h.score) for h in f],
            {h.chunk_id: h.doc_id for h in v + f},
        )
    return out


def metrics(lists, qrels, fusion: str, alpha: float, source: str) -> dict[str, float]:
    from corpusmill.evaluation.metrics import mean_metrics
    from corpusmill.evaluation.retrieval import doc_run
    from corpusmill.search.fusion import fuse

    runs = {}
    for qid, (vec, fts, doc_of) in lists.items():
        fused = fuse(vec, fts, fusion, alpha=alpha)
        hits = [SimpleNamespace(doc_id=doc_of[c], score=s) for c, s in fused]
        runs[qid] = doc_run(hits, source)
    return mean_metrics(runs, qrels)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="BEIR folder (default: ../shared/eval/scifact)")
    p.add_argument("--db", default="./data/eval-scifact", help="the store `corpusmill eval` built")
    p.add_argument("--depth", type=int, default=1000)
    p.add_argument("--step", type=float, default=0.05)
    p.add_argument("--out", default="", help="write the grid and the result as JSON here")
    args = p.parse_args()
    os.environ.setdefault("LANCEDB_LOG", "error")

    from corpusmill.config import Settings, prepare_process
    from corpusmill.evaluation.beir import load_beir
    from corpusmill.evaluation.retrieval import SOURCE_LABEL
    from corpusmill.model import Model
    from corpusmill.search import Searcher
    from corpusmill.search.filters import build_filter

    prepare_process()
    settings = Settings.from_env()
    data = args.data or settings.eval_data
    train, test = load_beir(data, "train"), load_beir(data, "test")
    embedder = Model(settings.embedder_spec()).load()
    searcher = Searcher(args.db, embedder=embedder)
    where = build_filter(source=SOURCE_LABEL)
    t0 = time.perf_counter()
    train_lists = lists_for(searcher, train.queries, args.depth, where)
    steps = round(1 / args.step)
    grid = []
    for i in range(steps + 1):
        alpha = round(i * args.step, 4)
        m = metrics(train_lists, train.qrels, "convex", alpha, SOURCE_LABEL)
        grid.append({"alpha": alpha, **m})
        print(f"train alpha={alpha:.2f} nDCG@10={m['ndcg@10']:.4f}", file=sys.stderr)
    best = max(grid, key=lambda g: (round(g["ndcg@10"], 6), -abs(g["alpha"] - 0.5)))
    train_rrf = metrics(train_lists, train.qrels, "rrf", 0.0, SOURCE_LABEL)
    test_lists = lists_for(searcher, test.queries, args.depth, where)
    result = {
        "train_queries": len(train.qrels),
        "test_queries": len(test.qrels),
        "depth": args.depth,
        "model": embedder.card.model_id,
        "dtype": embedder.lineage()["dtype"],
        "chosen_alpha": best["alpha"],
        "train": {"convex": best, "rrf": train_rrf},
        "test": {
            "convex": metrics(test_lists, test.qrels, "convex", best["alpha"], SOURCE_LABEL),
            "rrf": metrics(test_lists, test.qrels, "rrf", 0.0, SOURCE_LABEL),
        },
        "grid_train": grid,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    for split in ("train", "test"):
        for fusion in ("convex", "rrf"):
            m = result[split][fusion]
            print(f"{split} {fusion} nDCG@10={m['ndcg@10']:.4f} Recall@100={m['recall@100']:.4f}")
    print(f"chosen alpha={best['alpha']} (on train only)")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
