"""`corpusmill`: ingest into, search and evaluate a corpusmill store from the shell.

The configuration is read once, in `main`, and passed to each command.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from corpusmill.config import Settings, prepare_process
from corpusmill.errors import CorpusmillError


def _quiet() -> None:
    # Dagster marks backfill policies beta, pynvml warns it is a shim: noise on a CLI.
    warnings.filterwarnings("ignore")


def cmd_ingest(args, settings: Settings) -> int:
    from app.runs import instance_for_cli, run_ingest
    from resources import build_resources

    sources = list(args.paths) or []
    if args.default or not sources:
        sources = list(settings.sources) if not sources else sources + ["pydoc"]
    if args.label and len(args.paths) == 1:
        sources = [f"{args.label}={args.paths[0]}"]
    summary = run_ingest(
        sources,
        resources=build_resources(settings),
        instance=instance_for_cli(),
        with_rerank=args.rerank,
    )
    if args.json:
        print(json.dumps(summary))
    else:
        for key in (
            "documents",
            "quarantined",
            "chunks",
            "chunks_embedded",
            "chunks_reused",
            "tokens",
            "tokens_per_s",
            "padding_fraction",
            "model_load_seconds",
            "seconds",
        ):
            print(f"{key:>20}: {summary[key]}")
        if args.rerank:
            for key in (
                "rerank_scorer",
                "rerank_pairs_scored",
                "rerank_pairs_reused",
                "rerank_rows",
            ):
                print(f"{key:>20}: {summary[key]}")
        print(f"{'model':>20}: {summary['model_id']} on {summary['device']} ({summary['dtype']})")
    return 0 if summary["success"] else 1


def cmd_search(args, settings: Settings) -> int:
    from corpusmill.model import Model
    from corpusmill.search import Searcher

    searcher = Searcher(
        settings.db,
        embedder=Model(settings.embedder_spec()),
        reranker=Model(settings.reranker_spec()),
        storage_options=settings.storage_options,
    )
    hits = searcher.search(
        args.query,
        k=args.k,
        mode=args.mode,
        rerank=args.rerank,
        candidates=args.candidates or settings.rerank_k,
        doc_id=args.doc_id,
        source=args.source,
        partition=args.partition,
    )
    if args.json:
        print(json.dumps([h.as_dict() for h in hits]))
        return 0
    for i, h in enumerate(hits, start=1):
        snippet = " ".join(h.text.split())[:160]
        print(f"{i:>2}. {h.score:.4f}  {h.doc_id}  [{h.partition}]\n    {snippet}")
    if not hits:
        print("no results")
    elif args.rerank:
        hint = "" if hits[0].scorer == "cross-encoder" else " (CORPUSMILL_RERANKER: none set)"
        print(f"reranked by the {hits[0].scorer}{hint}")
    return 0


def cmd_eval(args, settings: Settings) -> int:
    from app.evaluation import main as eval_main

    return eval_main(args, settings)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="corpusmill", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    ing = sub.add_parser(
        "ingest", help="run the asset graph on files, folders or the built-in corpus"
    )
    ing.add_argument(
        "paths",
        nargs="*",
        help="files or folders (default: CORPUSMILL_SOURCES, i.e. the Python docs)",
    )
    ing.add_argument(
        "--default", action="store_true", help="ingest the built-in Python docs corpus"
    )
    ing.add_argument("--label", help="source label for a single PATH (default: its absolute path)")
    ing.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    ing.add_argument(
        "--rerank",
        action="store_true",
        help="also materialise rerank_scores for the query set (CORPUSMILL_QUERIES)",
    )
    ing.set_defaults(func=cmd_ingest)

    s = sub.add_parser("search", help="search the embeddings table")
    s.add_argument("query")
    s.add_argument("--k", type=int, default=10)
    s.add_argument("--mode", choices=["vector", "fts", "hybrid"], default="vector")
    s.add_argument(
        "--rerank",
        action="store_true",
        help="rescore the top candidates (cross-encoder, else bi-encoder)",
    )
    s.add_argument(
        "--candidates", type=int, default=0, help="hits rescored by --rerank (CORPUSMILL_RERANK_K)"
    )
    s.add_argument("--doc-id", help="only this document id (exact match)")
    s.add_argument("--source", help="only this source label, e.g. pydoc")
    s.add_argument("--partition", help="only this shard, shard-00 .. shard-15")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_search)

    e = sub.add_parser("eval", help="nDCG@10 / Recall@100 on BEIR SciFact (../shared/eval/scifact)")
    e.add_argument("--data", default=None, help="BEIR folder (default: ../shared/eval/scifact)")
    e.add_argument("--db", default=None, help="scratch LanceDB dir (default: ./data/eval-scifact)")
    e.add_argument("--modes", default="vector,fts,hybrid")
    e.add_argument("--limit-queries", type=int, default=0)
    e.set_defaults(func=cmd_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    _quiet()
    prepare_process()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args, Settings.from_env())
    except CorpusmillError as exc:
        print(f"corpusmill: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
