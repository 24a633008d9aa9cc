"""Pair scoring with real tiny models, and query-file validation."""

import json

import numpy as np
import pytest

from corpusmill.errors import ConfigError
from corpusmill.model import Model, ModelSpec
from corpusmill.queries import Query, load_queries, parse_queries
from corpusmill.rerank import BI_ENCODER, CROSS_ENCODER, PairScorer
from corpusmill.search import Hit
from corpusmill.search.rerank import rerank_hits
from corpusmill.sync.rerank_scores import score_id

PAIRS = [
    ("how do I catch an exception", "try and except catch exceptions " * 6),
    ("how do I catch an exception", "lambda makes a function"),
    ("what is a with statement", "the with statement manages a context " * 3),
    ("what is a with statement", "x"),
    ("short", "a much longer passage about nothing in particular " * 4),
]


@pytest.fixture(scope="module")
def embedder(tiny_embedder_path):
    return Model(ModelSpec(path=str(tiny_embedder_path), dtype="float32"))


@pytest.fixture(scope="module")
def cross(tiny_cross_encoder_path):
    # A tiny token budget forces several length-sorted batches through the engine.
    return Model(
        ModelSpec(
            path=str(tiny_cross_encoder_path),
            kind="cross-encoder",
            dtype="float32",
            max_batch_tokens=96,
        )
    )


def test_cross_encoder_scores_match_the_model_run_pair_by_pair(cross, embedder):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    scorer = PairScorer(embedder, cross)
    assert scorer.scorer == CROSS_ENCODER and scorer.model_id == cross.card.model_id
    scores = scorer.score(PAIRS)
    assert scorer.stats[0].batches > 1  # batched by token budget, not one call per pair

    path = cross.spec.path
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.inference_mode():
        expected = [
            model(**tok(q, p, truncation=True, max_length=64, return_tensors="pt")).logits[0, 0]
            for q, p in PAIRS
        ]
    np.testing.assert_allclose(scores, [float(e) for e in expected], atol=1e-4)


def test_without_a_cross_encoder_the_bi_encoder_scores_and_says_so(embedder):
    unconfigured = Model(ModelSpec(path="", kind="cross-encoder"))
    scorer = PairScorer(embedder, unconfigured)
    assert scorer.scorer == BI_ENCODER and scorer.model_id == embedder.card.model_id
    scores = scorer.score(PAIRS)
    for (q, p), s in zip(PAIRS, scores, strict=True):
        a, b = embedder.embed([q, p])
        assert s == pytest.approx(float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)), abs=1e-5)


def test_rerank_hits_orders_by_score_and_labels_the_scorer(cross, embedder):
    hits = [
        Hit(
            text=p,
            score=0.0,
            doc_id=f"d{i}",
            chunk_id=f"c{i}",
            source="s",
            uri="u",
            partition="shard-00",
            position=0,
        )
        for i, (_, p) in enumerate(PAIRS)
    ]
    ranked = rerank_hits("how do I catch an exception", hits, cross_encoder=cross)
    assert sorted(h.chunk_id for h in ranked) == sorted(h.chunk_id for h in hits)
    assert all(a.score >= b.score for a, b in zip(ranked, ranked[1:], strict=False))
    assert {h.scorer for h in ranked} == {CROSS_ENCODER}
    assert rerank_hits("q", [], cross_encoder=cross) == []
    by_cosine = rerank_hits("how do I catch an exception", hits, embedder=embedder)
    assert {h.scorer for h in by_cosine} == {BI_ENCODER} and len(by_cosine) == len(hits)


def test_score_id_changes_with_query_text_chunk_and_reranker_only():
    q = Query("q1", "text")
    base = score_id(q, "c1", "model", "rev")
    assert base == score_id(Query("q1", "text"), "c1", "model", "rev")
    assert base != score_id(Query("q1", "other text"), "c1", "model", "rev")
    assert base != score_id(q, "c2", "model", "rev")
    assert base != score_id(q, "c1", "model", "rev2")
    assert base != score_id(Query("q2", "text"), "c1", "model", "rev")


def test_builtin_queries_load():
    queries = load_queries("")
    assert len(queries) >= 10 and len({q.id for q in queries}) == len(queries)
    assert all(q.text.strip() for q in queries)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"id": "a", "text": "x"}', "not json"], ":2: not JSON"),
        (['{"text": "x"}'], 'missing "id"'),
        (['{"id": "a", "text": "  "}'], 'empty "text"'),
        (['{"id": "a", "text": "x"}', '{"id": "a", "text": "y"}'], "duplicate query id"),
        (["[1, 2]"], "expected an object"),
        ([""], "no queries"),
    ],
)
def test_bad_query_files_fail_with_the_line(lines, message):
    with pytest.raises(ConfigError, match=message):
        parse_queries(lines, "q.jsonl")


def test_query_file_from_disk(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(json.dumps({"id": i, "text": f"q {i}"}) for i in range(3)) + "\n")
    assert [q.id for q in load_queries(path)] == ["0", "1", "2"]
    with pytest.raises(ConfigError, match="CORPUSMILL_QUERIES"):
        load_queries(tmp_path / "missing.jsonl")
