"""`corpusmill eval` (and `make eval`): retrieval quality on BEIR SciFact through the
project's own path.

Ingests the BEIR corpus through the Dagster assets (chunking, the resident model,
LanceDB) into a scratch store, then queries it with the `Searcher` in each mode and prints
one line per mode. A second run re-materialises nothing (every chunk is reused) and only
re-queries. The protocol is in `corpusmill.evaluation.retrieval`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from app.runs import run_ingest
from corpusmill.config import Settings, quiet_lance_query_warnings
from corpusmill.errors import ConfigError
from corpusmill.evaluation.beir import load_beir
from corpusmill.evaluation.retrieval import MODES, SOURCE_LABEL, evaluate, format_line
from corpusmill.model import Model
from corpusmill.search import Searcher


def run_eval(
    data: str | Path,
    db: str,
    *,
    modes: Sequence[str] = MODES,
    limit_queries: int = 0,
    settings: Settings | None = None,
    chunking: tuple[int, int] | None = None,
    instance: dg.DagsterInstance | None = None,
    generation: str | None = None,
) -> dict[str, Any]:
    """Ingest the BEIR corpus into `db` (reusing whatever is already there), then query it.
    `generation`: the generation to query (default: the live one). Returns {"ingest": run
    summary, "metrics": {mode: ...}, "queries": n, "generation": id}."""
    settings = settings or Settings()
    labelled = load_beir(data, "test", limit_queries)
    chunk_tokens, overlap = chunking or (settings.eval_chunk_tokens, settings.eval_chunk_overlap)
    # The eval's own scratch store and chunking, the deployment's model.
    settings = settings.with_overrides(
        {"db": db, "chunk_tokens": chunk_tokens, "chunk_overlap": overlap}
    )
    summary = run_ingest(
        [f"{SOURCE_LABEL}={labelled.corpus_path}"],
        settings,
        instance=instance or dg.DagsterInstance.ephemeral(),
    )
    if not summary["success"]:
        raise ConfigError(
            f"ingesting {labelled.corpus_path} into {db} failed (run {summary['run_id']})"
        )
    searcher = Searcher(
        db,
        embedder=Model(settings.embedder_spec()),
        storage_options=settings.storage_options,
        generation=generation,
    ).pinned()  # the live generation (or the one named), with its model, for every query
    metrics = evaluate(searcher, labelled, modes)
    return {
        "ingest": summary,
        "metrics": metrics,
        "queries": len(labelled.qrels),
        "chunking": (chunk_tokens, overlap),
        "generation": searcher.generation.gen_id if searcher.generation else "",
    }


def main(args, settings: Settings) -> int:
    """`corpusmill eval`: one line per mode, `vector nDCG@10=0.xxxx Recall@100=0.xxxx`."""
    quiet_lance_query_warnings()
    data = Path(args.data or settings.eval_data).expanduser()
    db = args.db or settings.eval_db
    modes = [m.strip() for m in (args.modes or ",".join(MODES)).split(",") if m.strip()]
    t0 = time.perf_counter()
    result = run_eval(
        data,
        db,
        modes=modes,
        limit_queries=args.limit_queries or 0,
        settings=settings,
        generation=args.generation,
    )
    ing = result["ingest"]
    tokens, overlap = result["chunking"]
    print(
        f"# {result['queries']} test queries, {ing['documents']} documents, {ing['chunks']} chunks "
        f"({tokens} tokens, overlap {overlap}), embedded {ing['chunks_embedded']} "
        f"({ing['tokens']} tokens, {ing['tokens_per_s']} tokens/s), reused {ing['chunks_reused']}; "
        f"{ing['model_id']} {ing['dtype']} on {ing['device']}; db {db}",
        file=sys.stderr,
    )
    for mode, metrics in result["metrics"].items():
        print(format_line(mode, metrics), flush=True)
        print(
            f"# {mode}: {metrics['seconds']:.1f} s for {result['queries']} queries", file=sys.stderr
        )
    print(f"# {time.perf_counter() - t0:.1f} s in all (ingest {ing['seconds']} s)", file=sys.stderr)
    return 0
