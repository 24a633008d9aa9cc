"""rerank_scores with its pairs scored by `RayPairScores` workers (run in this process
here, one unit at a time, as an actor pool would run them; the real cluster:
tests/e2e/test_ray_embeddings.py) against the in-process scorer: the same rows, and a
pair whose score is stored is never sent to a worker. Tiny real bi-encoder and
cross-encoder, a real LanceDB store."""

import json
import shutil

import dagster as dg
import numpy as np
import pytest

from app.runs import run_ingest
from corpusmill.model import Model
from corpusmill.queries import load_queries
from corpusmill.rerank import PairScorer
from corpusmill.scale.ray_rerank import RayPairScores, ScoreWorker
from corpusmill.store import Store
from corpusmill.sync import sync_rerank_scores
from tests.assets.corpora import write_corpus
from tests.runs import CHUNKS, tiny_settings

K = 4
COLUMNS = ["score_id", "query_id", "chunk_id", "partition", "scorer", "reranker_id", "rank"]


def in_process_pairs(units, worker_args):
    """What the Ray pool does, minus Ray: one worker, one unit at a time."""
    worker = ScoreWorker(**worker_args)
    for unit in units:
        yield unit, worker.run(unit)


@pytest.fixture
def keep_torch_threads():
    """A `ScoreWorker` sets torch's thread count for its actor; here that is this process."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _rows(store: Store) -> dict[str, dict]:
    rows = store.scan("rerank_scores", [*COLUMNS, "score"]).to_pylist()
    return {r["score_id"]: r for r in rows}


def test_pairs_scored_by_workers_give_the_in_process_rows(
    tmp_path, tiny_embedder_path, tiny_cross_encoder_path, keep_torch_threads
):
    corpus = write_corpus(tmp_path / "corpus", n_docs=10, min_sentences=6)
    db = str(tmp_path / "local")
    settings = tiny_settings(db, tiny_embedder_path, reranker=str(tiny_cross_encoder_path))
    ingested = run_ingest(
        [str(corpus)], settings, instance=dg.DagsterInstance.ephemeral(), chunk_config=CHUNKS
    )
    assert ingested["success"]
    shutil.copytree(db, tmp_path / "ray")
    queries_file = tmp_path / "queries.jsonl"
    texts = {"q1": "topic3 sentence", "q2": "item 12", "q3": "about topic7"}
    queries_file.write_text(
        "".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in texts.items())
    )
    queries = load_queries(str(queries_file))
    embedder, cross = Model(settings.embedder_spec()), Model(settings.reranker_spec())
    parts = sorted(set(Store(db).scan("embeddings", ["partition"])["partition"].to_pylist()))

    local = sync_rerank_scores(Store(db), queries, parts, PairScorer(embedder, cross), k=K)
    remote = RayPairScores(cross.spec, 2, batch_pairs=5, map_pairs=in_process_pairs)
    ray_store = Store(str(tmp_path / "ray"))
    on_ray = sync_rerank_scores(ray_store, queries, parts, PairScorer(embedder, cross, remote), k=K)

    # Every pair went to the workers, in several units, and came back scored.
    assert remote.pairs == on_ray.pairs_scored == local.pairs_scored > 10
    assert remote.units > 2 and on_ray.pairs_failed == 0
    assert on_ray.scorer == "cross-encoder"
    # The same rows: the same pairs and scorer, scores to float32 rounding, and ranks the
    # same up to ties at that rounding (workers batch pairs in other groups, so two pairs
    # whose scores tie may come out in either order): the score the in-process rows hold
    # at a row's rank is its own.
    want, have = _rows(Store(db)), _rows(ray_store)
    assert have.keys() == want.keys() and len(have) == local.rows
    at_rank = {(r["query_id"], r["partition"], r["rank"]): r["score"] for r in want.values()}
    same = [c for c in COLUMNS if c != "rank"]
    for sid, row in have.items():
        assert {c: row[c] for c in same} == {c: want[sid][c] for c in same}
        assert np.isclose(row["score"], want[sid]["score"], atol=1e-5)
        ranked = at_rank[(row["query_id"], row["partition"], row["rank"])]
        assert np.isclose(ranked, row["score"], atol=1e-5), (row, want[sid])

    # Nothing changed: no pair is sent again, nothing is written.
    sent = remote.pairs
    again = sync_rerank_scores(ray_store, queries, parts, PairScorer(embedder, cross, remote), k=K)
    assert remote.pairs == sent and again.rows_written == 0
    assert again.pairs_reused == again.pairs
    # One query's text changed: only its pairs are sent.
    queries_file.write_text(queries_file.read_text().replace("item 12", "item 13 again"))
    changed = load_queries(str(queries_file))
    third = sync_rerank_scores(ray_store, changed, parts, PairScorer(embedder, cross, remote), k=K)
    q2_pairs = sum(1 for r in have.values() if r["query_id"] == "q2")
    assert remote.pairs - sent == third.pairs_scored == q2_pairs
