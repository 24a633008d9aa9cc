"""Retrieval quality on a labelled BEIR set (SciFact by default): nDCG@10 and Recall@100.

`corpusmill eval` (and `make eval`) ingests the BEIR corpus through the project's own
path (`runs.run_ingest`: the Dagster assets, chunking, the resident model, LanceDB) into a
scratch store, then queries it with `search.Searcher` in each mode and prints one line per
mode. A second run re-materialises nothing (every chunk is reused) and only re-queries.

Protocol (MTEB's, see ../shared/eval/README.md): test queries only (those in
`qrels/test.tsv`), raw query text, documents are title then text, the model's 256-token
window, exact search for the top 1,000. Chunks are what the store holds, so a document's
score is its best chunk's score. The eval chunks with 254 tokens and no overlap (256 minus
[CLS] and [SEP]): a document's first chunk is then exactly the window MTEB encodes, and its
later chunks can only add matches. CORPUSMILL_CHUNK_TOKENS / CORPUSMILL_CHUNK_OVERLAP, when
set, override that, so a chunking change shows its effect on quality.

Metrics are computed as pytrec_eval (trec_eval) does: a run is a {doc: score} map ranked
by score, ties broken by doc id descending; gains are the qrels' relevance levels (binary
for BEIR), discount log2(rank + 1), ideal DCG from the qrels. One difference, on purpose:
the mean is over every labelled query, and one with no results counts 0 (trec_eval -c);
plain pytrec_eval would drop it and look better.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corpusmill.errors import ConfigError

NDCG_K = 10
RECALL_K = 100
RETRIEVE_DEPTH = 1000  # chunks per query: MTEB retrieves the top 1,000 documents
MODES = ("vector", "fts", "hybrid", "hybrid-rrf")
# Eval mode -> (search mode, fusion): `hybrid` is the default (convex) fusion, as served.
SEARCH_OF = {
    "vector": ("vector", "convex"),
    "fts": ("fts", "convex"),
    "hybrid": ("hybrid", "convex"),
    "hybrid-rrf": ("hybrid", "rrf"),
}
SOURCE_LABEL = "scifact"  # the `source` the eval corpus gets in the store
DEFAULT_DB = "./data/eval-scifact"
EVAL_CHUNK_TOKENS = 254  # MiniLM's 256-token window minus [CLS] and [SEP]
EVAL_CHUNK_OVERLAP = 0
# MTEB's published all-MiniLM-L6-v2 figures on SciFact (test split); the BEIR paper's BM25.
REFERENCE = {"vector": 0.64508, "fts": 0.665}

Run = Mapping[str, float]  # doc id -> score, for one query
Qrel = Mapping[str, int]  # doc id -> relevance level, for one query


# -- metrics (pure) -------------------------------------------------------------------
def trec_order(run: Run) -> list[str]:
    """Doc ids best first, as trec_eval ranks a run: score descending, then doc id
    descending (so results never depend on dict order)."""
    return [d for d, _ in sorted(run.items(), key=lambda kv: (float(kv[1]), kv[0]), reverse=True)]


def dcg(gains: Iterable[float]) -> float:
    return sum(g / math.log2(rank + 1) for rank, g in enumerate(gains, start=1))


def ndcg_at_k(run: Run, qrel: Qrel, k: int = NDCG_K) -> float:
    """nDCG@k (trec_eval's ndcg_cut): 0 for a query with nothing relevant."""
    ideal = dcg(sorted((max(r, 0) for r in qrel.values()), reverse=True)[:k])
    if ideal <= 0:
        return 0.0
    return dcg(max(qrel.get(d, 0), 0) for d in trec_order(run)[:k]) / ideal


def recall_at_k(run: Run, qrel: Qrel, k: int = RECALL_K) -> float:
    """Share of the relevant documents (relevance > 0) found in the top k."""
    relevant = {d for d, r in qrel.items() if r > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(trec_order(run)[:k])) / len(relevant)


def mean_metrics(runs: Mapping[str, Run], qrels: Mapping[str, Qrel]) -> dict[str, float]:
    """Mean nDCG@10 and Recall@100 over every query in `qrels` (missing runs count 0)."""
    if not qrels:
        raise ConfigError("no labelled queries to evaluate")
    n = len(qrels)
    ndcg = sum(ndcg_at_k(runs.get(q, {}), qrel) for q, qrel in qrels.items()) / n
    recall = sum(recall_at_k(runs.get(q, {}), qrel) for q, qrel in qrels.items()) / n
    return {f"ndcg@{NDCG_K}": ndcg, f"recall@{RECALL_K}": recall}


def doc_run(hits: Iterable, source: str) -> dict[str, float]:
    """Chunk hits -> {corpus doc id: best chunk score}; hits of other sources are dropped.
    Store doc ids are `source#key` (ids.doc_id_for), the key being the BEIR `_id`."""
    prefix = f"{source}#"
    run: dict[str, float] = {}
    for hit in hits:
        if not hit.doc_id.startswith(prefix):
            continue
        doc = hit.doc_id[len(prefix) :]
        if doc not in run or hit.score > run[doc]:
            run[doc] = float(hit.score)
    return run


# -- BEIR loader ----------------------------------------------------------------------
@dataclass(frozen=True)
class BeirSet:
    root: Path
    corpus_path: Path
    queries: dict[str, str]  # only the labelled queries of the split, in qrels order
    qrels: dict[str, dict[str, int]]


def default_data_dir() -> Path:
    """CORPUSMILL_EVAL_DATA, else ../shared/eval/scifact next to the repository."""
    override = os.environ.get("CORPUSMILL_EVAL_DATA")
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parents[1].parent / "shared" / "eval" / "scifact"


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV (header `query-id corpus-id score`, CRLF line ends) -> nested map."""
    qrels: dict[str, dict[str, int]] = {}
    with path.open(newline="", encoding="utf-8") as fh:  # csv strips the \r of CRLF
        reader = csv.reader(fh, delimiter="\t")
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["query-id", "corpus-id", "score"]:
            raise ConfigError(f"{path}: expected the BEIR header 'query-id corpus-id score'")
        for n, row in enumerate(reader, start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 3:
                raise ConfigError(f"{path}:{n}: expected 3 tab-separated columns, got {row!r}")
            qid, doc, score = (c.strip() for c in row[:3])
            qrels.setdefault(qid, {})[doc] = int(score)
    return qrels


def load_beir(root: str | Path, split: str = "test", limit_queries: int = 0) -> BeirSet:
    """The labelled queries of `split` and their judgements; the corpus is read by ingest."""
    root = Path(root).expanduser().resolve()
    corpus = root / "corpus.jsonl"
    queries_path = root / "queries.jsonl"
    qrels_path = root / "qrels" / f"{split}.tsv"
    missing = [p for p in (corpus, queries_path, qrels_path) if not p.is_file()]
    if missing:
        raise ConfigError(
            f"not a BEIR folder: missing {', '.join(map(str, missing))}. Pass --data or set "
            "CORPUSMILL_EVAL_DATA (default ../shared/eval/scifact)"
        )
    qrels = read_qrels(qrels_path)
    if limit_queries > 0:
        qrels = dict(list(qrels.items())[:limit_queries])
    texts: dict[str, str] = {}
    with queries_path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rec = json.loads(line)  # `metadata` holds SciFact's evidence: never used
                if str(rec["_id"]) in qrels:
                    texts[str(rec["_id"])] = rec["text"]
    lost = [q for q in qrels if q not in texts]
    if lost:
        raise ConfigError(f"{len(lost)} labelled queries missing from {queries_path}: {lost[:5]}")
    return BeirSet(root, corpus, {q: texts[q] for q in qrels}, qrels)


# -- retrieval through the project's search path --------------------------------------
def evaluate(
    searcher,
    labelled: BeirSet,
    modes: Sequence[str] = MODES,
    *,
    source: str = SOURCE_LABEL,
    depth: int = RETRIEVE_DEPTH,
) -> dict[str, dict[str, float]]:
    """{mode: {"ndcg@10", "recall@100", "seconds"}} for the labelled queries."""
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ConfigError(f"unknown modes {unknown}; choose from {', '.join(MODES)}")
    results: dict[str, dict[str, float]] = {}
    for mode in modes:
        t0 = time.perf_counter()
        search_mode, fusion = SEARCH_OF[mode]
        runs = {
            qid: doc_run(
                searcher.search(text, k=depth, mode=search_mode, fusion=fusion, source=source),
                source,
            )
            for qid, text in labelled.queries.items()
        }
        results[mode] = {**mean_metrics(runs, labelled.qrels), "seconds": time.perf_counter() - t0}
    return results


def format_line(mode: str, metrics: Mapping[str, float]) -> str:
    return f"{mode} nDCG@{NDCG_K}={metrics[f'ndcg@{NDCG_K}']:.4f} Recall@{RECALL_K}={metrics[f'recall@{RECALL_K}']:.4f}"


def eval_chunking() -> tuple[int, int]:
    """254/0 unless CORPUSMILL_CHUNK_TOKENS / CORPUSMILL_CHUNK_OVERLAP are set."""
    from corpusmill.settings import _env_int

    return (
        _env_int("CORPUSMILL_CHUNK_TOKENS", EVAL_CHUNK_TOKENS),
        _env_int("CORPUSMILL_CHUNK_OVERLAP", EVAL_CHUNK_OVERLAP),
    )


def run_eval(
    data: str | Path,
    db: str,
    *,
    modes: Sequence[str] = MODES,
    limit_queries: int = 0,
    chunking: tuple[int, int] | None = None,
    embedder=None,
    instance=None,
) -> dict[str, Any]:
    """Ingest the BEIR corpus into `db` (reusing whatever is already there), then query it.
    Returns {"ingest": run summary, "metrics": {mode: ...}, "queries": n}."""
    import dagster as dg

    from corpusmill.runs import run_ingest
    from corpusmill.search import Searcher
    from resources import CrossEncoderResource, EmbedderResource, LanceStoreResource

    labelled = load_beir(data, "test", limit_queries)
    chunk_tokens, overlap = chunking or eval_chunking()
    embedder = embedder or EmbedderResource()
    summary = run_ingest(
        [f"{SOURCE_LABEL}={labelled.corpus_path}"],
        resources={
            "store": LanceStoreResource(uri=db),
            "embedder": embedder,
            "reranker": CrossEncoderResource(model_path=""),
        },
        instance=instance or dg.DagsterInstance.ephemeral(),
        chunk_config={"chunk_tokens": chunk_tokens, "chunk_overlap": overlap},
    )
    if not summary["success"]:
        raise ConfigError(
            f"ingesting {labelled.corpus_path} into {db} failed (run {summary['run_id']})"
        )
    searcher = Searcher(db, embedder=embedder)
    metrics = evaluate(searcher, labelled, modes)
    return {
        "ingest": summary,
        "metrics": metrics,
        "queries": len(labelled.qrels),
        "chunking": (chunk_tokens, overlap),
    }


def main(args) -> int:
    """`corpusmill eval`: one line per mode, `vector nDCG@10=0.xxxx Recall@100=0.xxxx`."""
    import sys

    # lance logs a deprecation warning per query whose select() omits `_distance`/`_score`
    # (search.py's business); 900 of them would bury the result lines.
    os.environ.setdefault("LANCEDB_LOG", "error")
    from corpusmill.settings import Settings
    from resources import EmbedderResource

    settings = Settings.from_env()  # read now, not at import: tests and shells set it late
    embedder = EmbedderResource(
        model_path=settings.model,
        device=settings.device,
        dtype=settings.dtype,
        max_batch_tokens=settings.max_batch_tokens,
    )
    data = Path(args.data).expanduser() if args.data else default_data_dir()
    db = args.db or DEFAULT_DB
    modes = [m.strip() for m in (args.modes or ",".join(MODES)).split(",") if m.strip()]
    t0 = time.perf_counter()
    result = run_eval(
        data, db, modes=modes, limit_queries=args.limit_queries or 0, embedder=embedder
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
