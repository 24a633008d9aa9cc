"""`corpusmill`: ingest into, search and evaluate a corpusmill store from the shell.

The configuration is read once, in `main`, and passed to each command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from corpusmill.config import Settings, prepare_process
from corpusmill.errors import EXIT_INTERNAL, InputError, UsageError, find_error, store_error


def _quiet() -> None:
    # Dagster marks backfill policies beta, pynvml warns it is a shim: noise on a CLI.
    warnings.filterwarnings("ignore")


def cmd_ingest(args, settings: Settings) -> int:
    from app.runs import instance_for_cli, run_ingest
    from resources import build_resources

    for path in args.paths:
        if not os.path.lexists(path):
            raise InputError(f"{path!r} does not exist (check the path given to ingest)")
        if not (Path(path).is_file() or Path(path).is_dir()):
            raise InputError(f"{path!r} is not a regular file or a folder (a FIFO, a device?)")
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
        # Dagster's console log prints each failure with two tracebacks; without --debug
        # the one-line message from `main` is the whole story.
        log_level="WARNING" if args.debug else "CRITICAL",
    )
    if summary["quarantined"] and not args.json:
        print(f"corpusmill: quarantined:\n{summary['quarantine_sample']}", file=sys.stderr)
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
    )
    hits = searcher.search(
        args.query,
        k=args.k,
        mode=args.mode,
        rerank=args.rerank,
        candidates=settings.rerank_k if args.candidates is None else args.candidates,
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


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (usage text on `--help`, not on every mistake)."""

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="corpusmill", description=__doc__)
    p.add_argument(
        "--debug",
        action="store_true",
        help="print tracebacks and Dagster's log (also: CORPUSMILL_DEBUG=1)",
    )
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
        "--candidates",
        type=int,
        default=None,
        help="hits rescored by --rerank (CORPUSMILL_RERANK_K)",
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
    for command in (ing, s, e):  # `corpusmill ingest --debug` works as well
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command. A failure is one line on stderr and an exit code per class
    (corpusmill.errors); the traceback only with --debug or CORPUSMILL_DEBUG=1."""
    _quiet()
    prepare_process()
    debug = os.environ.get("CORPUSMILL_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")
    db = os.environ.get("CORPUSMILL_DB") or Settings.db
    try:
        args = build_parser().parse_args(argv)
        args.debug = debug = debug or args.debug
        settings = Settings.from_env()
        db = settings.db
        return args.func(args, settings)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 (every failure becomes one line)
        if debug:
            raise
        error = find_error(exc) or store_error(exc, db)
        if error is None:
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            print(
                f"corpusmill: internal error: {type(exc).__name__}: {first} (rerun with "
                "--debug or CORPUSMILL_DEBUG=1 for the traceback)",
                file=sys.stderr,
            )
            return EXIT_INTERNAL
        print(f"corpusmill: error: {' '.join(str(error).split())}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
