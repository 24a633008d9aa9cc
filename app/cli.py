"""`corpusmill`: ingest into, search and evaluate a corpusmill store from the shell.

The configuration is read once, in `main`, and passed to each command.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from pathlib import Path

from app.generations import add_parser as add_generations_parser
from app.sources import add_parser as add_sources_parser
from corpusmill.config import Settings, debug_requested, prepare_process
from corpusmill.errors import (
    EXIT_INTERNAL,
    ConfigError,
    InputError,
    UsageError,
    find_error,
    store_error,
)


def cmd_ingest(args, settings: Settings) -> int:
    from app.progress import ingest_progress
    from app.runs import instance_for, run_ingest
    from corpusmill.sources import is_object_uri

    for path in args.paths:
        if "://" in path:
            if not is_object_uri(path):
                raise InputError(f"{path!r}: of object stores, only s3://bucket/prefix is read")
            continue  # listed by the run; a bucket that does not exist is an error there
        if not os.path.lexists(path):
            raise InputError(f"{path!r} does not exist (check the path given to ingest)")
        if not (Path(path).is_file() or Path(path).is_dir()):
            raise InputError(f"{path!r} is not a regular file or a folder (a FIFO, a device?)")
    sources = list(args.paths) or []
    if args.default or not sources:
        sources = list(settings.sources) if not sources else sources + ["pydoc"]
    if args.label and len(args.paths) == 1:
        sources = [f"{args.label}={args.paths[0]}"]
    # The instance is closed after the run: its event log's connections with it
    # (dagster_corpusmill/event_log.py keeps them open while the process lives).
    with ingest_progress(args.json) as progress, instance_for(settings) as instance:
        summary = run_ingest(
            sources,
            settings,
            instance=instance,
            with_rerank=args.rerank,
            progress=progress,
            # Dagster's console log prints each failure with two tracebacks; without --debug
            # the one-line message from `main` is the whole story.
            log_level="WARNING" if args.debug else "CRITICAL",
        )
    if summary["quarantined"] and not args.json:
        print(f"corpusmill: quarantined:\n{summary['quarantine_sample']}", file=sys.stderr)
    if summary["vectors_damaged"] and not args.json:
        print(
            f"corpusmill: {summary['vectors_damaged']} stored vectors were damaged and not "
            f"reused; {summary['vectors_repaired']} embedded again "
            f"(e.g. {summary['vectors_damaged_sample']})",
            file=sys.stderr,
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
            "vectors_damaged",
            "vectors_repaired",
            "tokens",
            "tokens_per_s",
            "padding_fraction",
            "model_load_seconds",
            "seconds",
        ):
            value = summary[key]
            if key == "quarantined" and value:
                value = f"{value} ({', '.join(f'{n} at {stage}' for stage, n in summary['quarantined_by_stage'].items() if n)})"
            print(f"{key:>20}: {value}")
        if args.rerank:
            for key in (
                "rerank_scorer",
                "rerank_pairs_scored",
                "rerank_pairs_reused",
                "rerank_rows",
            ):
                print(f"{key:>20}: {summary[key]}")
        print(f"{'model':>20}: {summary['model_id']} on {summary['device']} ({summary['dtype']})")
    if summary["failure"]:
        print(f"corpusmill: error: {summary['failure']}", file=sys.stderr)
        return ConfigError.exit_code
    return 0 if summary["success"] else 1


def cmd_search(args, settings: Settings) -> int:
    from corpusmill.model import Model
    from corpusmill.search import Searcher

    searcher = Searcher(
        settings.db,
        embedder=Model(settings.embedder_spec()),
        reranker=Model(settings.reranker_spec()),
        storage_options=settings.storage_options,
        generation=args.generation,
    ).pinned()  # one generation, one version of it, for every query of this command
    options = {
        "k": args.k,
        "mode": args.mode,
        "fusion": args.fusion,
        "rerank": args.rerank,
        "candidates": settings.rerank_k if args.candidates is None else args.candidates,
        "doc_id": args.doc_id,
        "source": args.source,
        "partition": args.partition,
    }
    if args.queries:
        if args.query is not None:
            raise UsageError("give a QUERY or --queries FILE, not both")
        queries = read_queries(args.queries)
        results = searcher.search_many([text for _, text in queries], **options)
        for (qid, _), hits in zip(queries, results, strict=True):
            print(json.dumps({"id": qid, "hits": [h.as_dict() for h in hits]}))
        return 0
    if args.query is None:
        raise UsageError("give a QUERY, or --queries FILE.jsonl")
    hits = searcher.search(args.query, **options)
    if args.json:
        print(json.dumps([h.as_dict() for h in hits]))
        return 0
    for i, h in enumerate(hits, start=1):
        snippet = " ".join(h.text.split())[:160]
        where = f"  ({h.citation()})" if h.citation() else ""
        print(f"{i:>2}. {h.score:.4f}  {h.doc_id}{where}  [{h.partition}]\n    {snippet}")
    if not hits:
        print("no results")
    elif args.rerank:
        hint = "" if hits[0].scorer == "cross-encoder" else " (CORPUSMILL_RERANKER: none set)"
        print(f"reranked by the {hits[0].scorer}{hint}")
    return 0


def read_queries(path: str) -> list[tuple[str | int, str]]:
    """`{"id", "text"}` per line -> [(id, text)]; a bad line is an error naming it."""
    queries = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                qid, text = rec["id"], rec["text"]
            except (ValueError, KeyError, TypeError):
                raise InputError(f'{path}:{n}: expected {{"id": ..., "text": ...}}') from None
            if not isinstance(text, str) or not text.strip():
                raise InputError(f"{path}:{n}: `text` must be a non-empty string")
            queries.append((qid, text))
    return queries


def cmd_serve(args, settings: Settings) -> int:
    from app.serve import serve

    serve(
        settings,
        args.host,
        args.port,
        max_wait_s=0.0 if args.no_microbatch else args.batch_wait_ms / 1000,
        max_batch=1 if args.no_microbatch else args.max_batch,
    )
    return 0


def cmd_eval(args, settings: Settings) -> int:
    from app.evaluation import main as eval_main

    return eval_main(args, settings)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (usage text on `--help`, not on every mistake)."""

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="corpusmill",
        description="Ingest files into a corpusmill store (LanceDB at CORPUSMILL_DB), search\n"
        "it, and measure retrieval quality. `corpusmill COMMAND --help` explains each\ncommand.",
        epilog="examples:\n  corpusmill ingest docs/ notes.md\n"
        '  corpusmill search "how do I catch an exception" --k 5\n  corpusmill eval',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--debug",
        action="store_true",
        help="print tracebacks and Dagster's log (also: CORPUSMILL_DEBUG=1)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    ing = sub.add_parser(
        "ingest",
        help="run the asset graph on files, folders or the built-in corpus",
        description="Run the `ingest` job (raw_corpus -> chunked_documents -> embeddings) "
        "over all 16 shards in one run, into CORPUSMILL_DB; recorded in the Dagster "
        "instance when DAGSTER_HOME is set. Shows a progress bar on a terminal.",
    )
    ing.add_argument(
        "paths",
        nargs="*",
        help="files, folders or s3://bucket/prefix (default: CORPUSMILL_SOURCES, i.e. the "
        "Python docs)",
    )
    ing.add_argument(
        "--default", action="store_true", help="ingest the built-in Python docs corpus"
    )
    ing.add_argument("--label", help="source label for a single PATH (default: its absolute path)")
    ing.add_argument(
        "--json",
        action="store_true",
        help="print only the summary, as one JSON object (no progress output)",
    )
    ing.add_argument(
        "--rerank",
        action="store_true",
        help="also materialise rerank_scores for the query set (CORPUSMILL_QUERIES)",
    )
    ing.set_defaults(func=cmd_ingest)

    s = sub.add_parser(
        "search",
        help="search the embeddings table",
        description=f"Search the store at CORPUSMILL_DB (default {Settings.db}); prints the "
        "best hits first, each with its score, document id, shard and a snippet.",
    )
    s.add_argument("query", nargs="?", help="the text to search for (quote it if it has spaces)")
    s.add_argument(
        "--queries",
        metavar="FILE.jsonl",
        help='one {"id", "text"} per line, embedded in one pass; one JSON line of hits each',
    )
    s.add_argument("--k", type=int, default=10, help="how many hits to print (default 10)")
    s.add_argument(
        "--mode",
        choices=["vector", "fts", "hybrid"],
        default="vector",
        help="vector: cosine over the embeddings; fts: BM25 over the chunk text; hybrid: "
        "both, fused (see --fusion) (default vector)",
    )
    s.add_argument(
        "--fusion",
        choices=["convex", "rrf"],
        default="convex",
        help="hybrid: convex combination of min-max scores (default) or reciprocal rank fusion",
    )
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
    s.add_argument(
        "--generation",
        help="search this model generation (`corpusmill generations list`); default: the "
        "live one, with the model that wrote it",
    )
    s.add_argument(
        "--json",
        action="store_true",
        help="print the hits as one JSON list (text, score, doc_id, chunk_id, source, uri, "
        "partition, position, page_first, page_last, section), best first",
    )
    s.set_defaults(func=cmd_search)

    v = sub.add_parser(
        "serve",
        help="HTTP service, model resident: /search, OpenAI-compatible /v1/embeddings, "
        "/v1/rerank, /metrics (see /docs)",
    )
    v.add_argument("--host", default="127.0.0.1", help="non-loopback needs CORPUSMILL_API_TOKEN")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument(
        "--batch-wait-ms",
        type=float,
        default=2.0,
        help="longest a query waits to share a forward with others (corpusmill/engine/microbatch.py)",
    )
    v.add_argument("--max-batch", type=int, default=32, help="queries per forward at most")
    v.add_argument(
        "--no-microbatch", action="store_true", help="one forward per query (for comparison)"
    )
    v.set_defaults(func=cmd_serve)

    e = sub.add_parser("eval", help="nDCG@10 / Recall@100 on BEIR SciFact (../shared/eval/scifact)")
    e.add_argument("--data", default=None, help="BEIR folder (default: ../shared/eval/scifact)")
    e.add_argument("--db", default=None, help="scratch LanceDB dir (default: ./data/eval-scifact)")
    e.add_argument(
        "--modes",
        default="vector,fts,hybrid,hybrid-rrf",
        help="comma-separated search modes to score",
    )
    e.add_argument(
        "--limit-queries", type=int, default=0, help="score only the first N queries (0: all)"
    )
    e.add_argument(
        "--generation",
        help="score this model generation (`corpusmill generations list`); default: the live one",
    )
    e.set_defaults(func=cmd_eval)
    for command in (
        ing,
        s,
        e,
        *add_generations_parser(sub),
        *add_sources_parser(sub),
    ):  # `corpusmill ingest --debug` works as well
        command.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="print tracebacks and Dagster's log (also: CORPUSMILL_DEBUG=1)",
        )
    return p


def one_shot_gc() -> None:
    """Garbage collection for a process that runs one command and exits.

    Importing torch, transformers, lancedb and Dagster leaves ~600k long-lived objects, and
    CPython's default thresholds traverse all of them again at each 25% of growth: ~1 s of
    CPU in a cold `ingest` (docs/BENCHMARKS.md, cold start). Young collections still run, so
    short-lived cycles are freed as before; the full ones become rare. Not for `serve`."""
    gen0, gen1, _ = gc.get_threshold()
    gc.set_threshold(gen0, gen1, 1000)


def main(argv: list[str] | None = None) -> int:
    """Run one command. A failure is one line on stderr and an exit code per class
    (corpusmill.errors); the traceback only with --debug or CORPUSMILL_DEBUG=1.

    `argv` None means this process is the command (the `corpusmill` script, `python -m
    app.cli`): then the collector is tuned for a one-shot process and frozen at the end,
    so the interpreter's last collection at exit skips every object the command left (it
    took 1.5-4 s after a cold `ingest`). Callers in a process of their own (tests) pass
    `argv` and keep the defaults."""
    process_is_command = argv is None
    try:
        return _main(argv, process_is_command)
    finally:
        if process_is_command:
            gc.freeze()


def _main(argv: list[str] | None, process_is_command: bool) -> int:
    prepare_process()
    debug = debug_requested()
    db = Settings.db  # until the settings are read: then theirs
    try:
        args = build_parser().parse_args(argv)
        args.debug = debug = debug or args.debug
        if process_is_command and args.command != "serve":
            one_shot_gc()
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
