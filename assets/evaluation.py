"""retrieval_quality: nDCG@10 and Recall@100 of every search mode on a labelled query set.

Evaluates whatever the store holds for one source (default `scifact`, as
`corpusmill ingest --label scifact .../corpus.jsonl` or `corpusmill eval` writes it)
against that set's BEIR qrels, and records the figures as numeric metadata, so a model or
chunking change shows its effect on quality in the UI's plots. Not in the ingest job:
it is materialised on demand (launchpad, or `dagster asset materialize`).

(No `from __future__ import annotations`: Dagster reads the annotations at decoration.)
"""

import time

import dagster as dg

from assets.embeddings import embeddings
from assets.partitions import STORE_POOL
from corpusmill.config import Settings
from corpusmill.evaluation.metrics import NDCG_K, RECALL_K
from corpusmill.evaluation.retrieval import SOURCE_LABEL
from corpusmill.model.pool import ModelPool
from corpusmill.search import MODES
from corpusmill.store import Store


class EvaluationConfig(dg.Config):
    """Which labelled set to score, against which source in the store."""

    eval_data: str | None = (
        None  # a BEIR folder; unset: CORPUSMILL_EVAL_DATA (../shared/eval/scifact)
    )
    split: str = "test"
    source: str = SOURCE_LABEL  # the `source` label the corpus was ingested under
    modes: list[str] = list(MODES)
    limit_queries: int = 0  # 0: every labelled query
    generation: str = ""  # a generation id; "": the live one


@dg.asset(
    deps=[embeddings],
    pool=STORE_POOL,  # the first full-text query builds an index: a write
    group_name="quality",
    kinds={"lancedb"},
)
def retrieval_quality(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    store: dg.ResourceParam[Store],
    models: dg.ResourceParam[ModelPool],
    settings: dg.ResourceParam[Settings],
) -> dg.MaterializeResult:
    """Mean nDCG@10 and Recall@100 per search mode over BEIR SciFact's labelled queries
    (a document scores as its best chunk).

    Needs, before you materialise it: (1) the BEIR folder at CORPUSMILL_EVAL_DATA (default
    ../shared/eval/scifact: corpus.jsonl, queries.jsonl, qrels/test.tsv), and (2) that
    corpus ingested under the source label `scifact`: `corpusmill ingest --label scifact
    ../shared/eval/scifact/corpus.jsonl` (or `corpusmill eval`), or the ingest job with
    raw_corpus config `sources: ["scifact=/path/to/corpus.jsonl"]`. Without them the run
    fails at once with a message that says which is missing."""
    from corpusmill.errors import ConfigError
    from corpusmill.evaluation.beir import load_beir
    from corpusmill.evaluation.retrieval import evaluate
    from corpusmill.search import Searcher
    from corpusmill.store import eq_filter
    from corpusmill.store.upkeep import has_fts_index, index_for_search

    run = settings.with_overrides(config.model_dump())
    labelled = load_beir(run.eval_data, config.split, config.limit_queries)
    # The live generation (or the one named), with its own model, fixed for the whole run.
    searcher = Searcher(
        store, embedder=models.base, models=models, generation=config.generation or None
    ).pinned()
    chunks = searcher.store.count("embeddings", eq_filter("source", config.source))
    if chunks == 0:
        raise ConfigError(
            f"retrieval_quality needs the labelled corpus in the store, and {store.uri} has "
            f"no chunks of source {config.source!r}: ingest it first (`corpusmill ingest "
            f"--label {config.source} {labelled.corpus_path}`, or the ingest job with "
            f'raw_corpus config sources: ["{config.source}={labelled.corpus_path}"])'
        )
    if ("fts" in config.modes or "hybrid" in config.modes) and not has_fts_index(searcher.table):
        with store.write_lock():  # a writer: the searcher never builds an index
            index_for_search(searcher.store)
        pinned = searcher.generation.gen_id if searcher.generation else None
        searcher = Searcher(store, embedder=models.base, models=models, generation=pinned).pinned()
    t0 = time.perf_counter()
    results = evaluate(searcher, labelled, config.modes, source=config.source)
    meta: dict = {}
    for mode, metrics in results.items():
        meta[f"{mode}_ndcg_at_{NDCG_K}"] = dg.MetadataValue.float(
            round(metrics[f"ndcg@{NDCG_K}"], 5)
        )
        meta[f"{mode}_recall_at_{RECALL_K}"] = dg.MetadataValue.float(
            round(metrics[f"recall@{RECALL_K}"], 5)
        )
        context.log.info(f"{mode}: {metrics}")
    meta["queries"] = len(labelled.qrels)
    meta["chunks_in_source"] = chunks
    meta["dataset"] = str(labelled.root)
    meta["split"] = config.split
    meta["seconds"] = round(time.perf_counter() - t0, 2)
    meta.update(searcher.embedder.lineage())
    meta["generation"] = searcher.generation.gen_id if searcher.generation else ""
    meta["embeddings_table_version"] = searcher.store.version("embeddings")
    return dg.MaterializeResult(metadata=meta)
