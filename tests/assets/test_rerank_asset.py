"""rerank_scores through real `dagster.materialize` runs: tiny real bi-encoder and
cross-encoder, real LanceDB. Idempotency, reuse of unchanged pairs, scorer labelling."""

import json

import dagster as dg
import pytest

from app.runs import run_ingest
from corpusmill.ids import ALL_PARTITIONS
from corpusmill.model import LOADS as LOAD_COUNTS
from corpusmill.model import Model
from corpusmill.store import Store
from resources import build_resources
from tests.assets.corpora import write_corpus
from tests.runs import CHUNKS, tiny_settings

K = 3


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "corpus", n_docs=10, min_sentences=6)


@pytest.fixture
def queries(tmp_path):
    path = tmp_path / "queries.jsonl"
    write_queries(path, {"q1": "topic3 sentence", "q2": "item 12", "q3": "about topic7"})
    return path


def write_queries(path, queries):
    path.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in queries.items()))


def settings_for(db_uri, embedder_path, cross_path=None):
    return tiny_settings(
        db_uri, embedder_path, reranker=str(cross_path or ""), max_batch_tokens=512
    )


def run(corpus, settings, queries, **kw):
    summary = run_ingest(
        [str(corpus)],
        settings,
        instance=dg.DagsterInstance.ephemeral(),
        chunk_config=CHUNKS,
        with_rerank=True,
        rerank_config={"queries": str(queries), "rerank_k": K},
        **kw,
    )
    assert summary["success"]
    return summary


def scores(db_uri):
    rows = Store(db_uri).scan(
        "rerank_scores",
        ["score_id", "query_id", "chunk_id", "partition", "scorer", "score", "rank"],
    )
    return sorted(rows.to_pylist(), key=lambda r: r["score_id"])


def test_cross_encoder_scores_every_query_against_top_k_per_shard(
    corpus, queries, db_uri, tiny_embedder_path, tiny_cross_encoder_path
):
    before = LOAD_COUNTS["cross-encoder"]
    settings = settings_for(db_uri, tiny_embedder_path, tiny_cross_encoder_path)
    summary = run(corpus, settings, queries)
    assert LOAD_COUNTS["cross-encoder"] == before + 1  # loaded once for all shards
    rows = scores(db_uri)
    assert {r["scorer"] for r in rows} == {"cross-encoder"}
    store = Store(db_uri)
    chunks = store.scan("embeddings", ["chunk_id", "partition"]).to_pylist()
    per_shard = {p: sum(1 for c in chunks if c["partition"] == p) for p in ALL_PARTITIONS}
    expected = 3 * sum(min(K, n) for n in per_shard.values())
    assert len(rows) == expected == summary["rerank_rows"] == summary["rerank_pairs_scored"]
    for q in ("q1", "q2", "q3"):
        for p in ALL_PARTITIONS:
            mine = sorted(
                (r for r in rows if r["query_id"] == q and r["partition"] == p),
                key=lambda r: r["rank"],
            )
            assert [r["rank"] for r in mine] == list(range(1, len(mine) + 1))
            assert all(a["score"] >= b["score"] for a, b in zip(mine, mine[1:], strict=False))

    # Re-materialising with nothing changed scores nothing and commits nothing.
    version = store.version("rerank_scores")
    again = run(corpus, settings, queries)
    assert again["rerank_pairs_scored"] == 0 and again["rerank_pairs_reused"] == expected
    assert store.version("rerank_scores") == version
    assert scores(db_uri) == rows

    # Editing one query rescores only its pairs; removing one deletes its rows.
    write_queries(queries, {"q1": "topic3 sentence", "q2": "item 12 changed"})
    third = run(corpus, settings, queries)
    q2_pairs = sum(1 for r in rows if r["query_id"] == "q2")
    assert third["rerank_pairs_scored"] == q2_pairs
    after = scores(db_uri)
    assert {r["query_id"] for r in after} == {"q1", "q2"}
    assert [r for r in after if r["query_id"] == "q1"] == [r for r in rows if r["query_id"] == "q1"]


def test_changed_document_rescores_only_its_chunks(
    corpus, queries, db_uri, tiny_embedder_path, tiny_cross_encoder_path
):
    settings = settings_for(db_uri, tiny_embedder_path, tiny_cross_encoder_path)
    run(corpus, settings, queries)
    columns = ["query_hash", "chunk_id", "content_hash", "doc_id"]
    key = lambda r: (r["query_hash"], r["chunk_id"], r["content_hash"])  # noqa: E731
    before = {key(r) for r in Store(db_uri).scan("rerank_scores", columns).to_pylist()}
    (corpus / "doc03.txt").write_text("topic3 sentence rewritten completely. " * 5)
    second = run(corpus, settings, queries)
    after = Store(db_uri).scan("rerank_scores", columns).to_pylist()
    new_pairs = [r for r in after if key(r) not in before]
    # Exactly the pairs that did not exist before were scored (doc03's new chunks, and any
    # chunk that its change let into a query's top k); every other pair kept its score.
    assert second["rerank_pairs_scored"] == len(new_pairs) > 0
    assert any(r["doc_id"].endswith("doc03.txt") for r in new_pairs)


def test_bi_encoder_fallback_says_so(corpus, queries, db_uri, tiny_embedder_path):
    settings = settings_for(db_uri, tiny_embedder_path)
    result = dg.materialize(
        [*_upstream(), _rerank()],
        resources=build_resources(settings),
        instance=dg.DagsterInstance.ephemeral(),
        run_config={
            "ops": {
                "raw_corpus": {"config": {"sources": [str(corpus)]}},
                "chunked_documents": {"config": CHUNKS},
                "rerank_scores": {"config": {"queries": str(queries), "rerank_k": K}},
            }
        },
        tags={
            "dagster/asset_partition_range_start": ALL_PARTITIONS[0],
            "dagster/asset_partition_range_end": ALL_PARTITIONS[-1],
        },
    )
    assert result.success
    meta = next(
        e.event_specific_data.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.event_specific_data.materialization.asset_key.to_user_string() == "rerank_scores"
    )
    assert meta["scorer"].value == "bi-encoder"
    assert meta["reranker_id"].value == Model(settings.embedder_spec()).card.model_id
    rows = scores(db_uri)
    assert rows and {r["scorer"] for r in rows} == {"bi-encoder"}
    assert all(-1.0001 <= r["score"] <= 1.0001 for r in rows)  # a cosine


def _upstream():
    from assets.corpus import chunked_documents, raw_corpus
    from assets.embeddings import embeddings

    return [raw_corpus, chunked_documents, embeddings]


def _rerank():
    from assets.rerank import rerank_scores

    return rerank_scores
