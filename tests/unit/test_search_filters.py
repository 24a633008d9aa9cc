"""Search modes, filters and injection on a real LanceDB table written with a tiny real
bi-encoder. Hostile filter values match nothing extra and delete nothing."""

import pytest

from corpusmill.errors import StoreError, UsageError
from corpusmill.ids import partition_of
from corpusmill.model import Model, ModelSpec
from corpusmill.search import Searcher
from corpusmill.search.filters import build_filter
from corpusmill.search.fusion import CONVEX_ALPHA, convex_fuse, rrf_fuse
from corpusmill.store import Store, rows_to_table
from corpusmill.store.upkeep import index_for_search

HOSTILE = [
    "x' OR '1'='1",
    "x' OR 1=1 --",
    "'; DELETE FROM embeddings; --",
    'x" OR "1"="1',
    "a;b;c",
    # A backslash before a quote: lancedb 0.40's Expr.to_sql() leaves this quote
    # undoubled, so rendered as SQL it would read `... = 'x\') OR (1=1) --` (every row).
    "x\\') OR (1=1) --",
    "\\'",
]
TEXTS = {
    "pydoc#exceptions": "try and except clauses catch an exception raised in the block",
    "pydoc#with": "the with statement wraps a block with a context manager",
    "pydoc#lambda": "lambda expressions create small anonymous functions",
    "notes#x' OR '1'='1": "a document whose id looks like an injection: zebra",
    "notes#x\\') OR (1=1) --": "another hostile id with a backslash: giraffe",
}


@pytest.fixture(scope="module")
def embedder(tiny_embedder_path):
    return Model(ModelSpec(path=str(tiny_embedder_path), dtype="float32")).load()


@pytest.fixture
def searcher(tmp_path, embedder):
    store = Store(str(tmp_path / "db"))
    table = store.ensure_embeddings(embedder.card)
    vectors = embedder.embed(list(TEXTS.values()))
    rows = []
    for i, ((doc_id, text), vec) in enumerate(zip(TEXTS.items(), vectors, strict=True)):
        source = doc_id.split("#", 1)[0]
        rows.append(
            {
                "chunk_id": f"c{i}",
                "doc_id": doc_id,
                "doc_key": f"k{i}",
                "source": source,
                "uri": doc_id,
                "partition": partition_of(doc_id),
                "position": 0,
                "text": text,
                "content_hash": f"h{i}",
                "doc_hash": f"d{i}",
                "n_tokens": 10,
                "chunker": "t",
                "vector": vec.tolist(),
                "model_id": embedder.card.model_id,
            }
        )
    rows = [{k: r.get(k) for k in table.schema.names} for r in rows]
    table.add(rows_to_table(rows, table.schema))
    index_for_search(store)  # a writer's step: done here so the tests can check nothing else writes
    searcher = Searcher(store.uri, embedder=embedder)
    return searcher


@pytest.mark.parametrize("mode", ["vector", "fts", "hybrid"])
@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_filters_match_nothing_extra_and_delete_nothing(searcher, mode, value):
    table = searcher.table
    before = (sorted(table.to_arrow()["chunk_id"].to_pylist()), table.version)
    for field in ("doc_id", "source"):
        hits = searcher.search("exception block statement", k=10, mode=mode, **{field: value})
        assert all(getattr(h, field) == value for h in hits), (field, value, hits)
        expected = sum(1 for d in TEXTS if (d if field == "doc_id" else d.split("#")[0]) == value)
        assert len(hits) <= expected
    after = searcher.table
    assert (sorted(after.to_arrow()["chunk_id"].to_pylist()), after.version) == before


@pytest.mark.parametrize("value", ["x' OR '1'='1", "x\\') OR (1=1) --"])
def test_hostile_looking_id_is_found_exactly(searcher, value):
    doc_id = f"notes#{value}"
    hits = searcher.search("zebra giraffe", k=10, mode="vector", doc_id=doc_id)
    assert [h.doc_id for h in hits] == [doc_id]


def test_partition_must_be_a_shard_key(searcher):
    with pytest.raises(UsageError, match="shard-00"):
        searcher.search("exception", partition="x' OR '1'='1")
    part = partition_of("pydoc#lambda")
    hits = searcher.search("anonymous functions", k=10, mode="hybrid", partition=part)
    assert hits and {h.partition for h in hits} == {part}


def test_filters_combine_with_and(searcher):
    hits = searcher.search("block", k=10, mode="vector", source="pydoc", doc_id="pydoc#with")
    assert [h.doc_id for h in hits] == ["pydoc#with"]
    assert searcher.search("block", k=10, mode="vector", source="notes", doc_id="pydoc#with") == []
    assert build_filter() is None


def test_fulltext_finds_the_word_and_ranks_by_bm25(searcher):
    hits = searcher.search("anonymous lambda", k=3, mode="fts")
    assert hits[0].doc_id == "pydoc#lambda" and hits[0].scorer == "fts"
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))
    # query syntax characters are plain text, never an error: the words still match, and
    # words found in no document match nothing (an "OR" or "1=1" would match every row)
    hits = searcher.search('anonymous" OR (1=1); --', k=3, mode="fts")
    assert [h.doc_id for h in hits] == ["pydoc#lambda"]
    assert searcher.search("he said \"x' OR (1=1); --", k=3, mode="fts") == []


def test_hybrid_rrf_is_rrf_of_vector_and_fulltext(searcher):
    query = "context manager with statement"
    vec = searcher.vector(query, 100)
    fts = searcher.fulltext(query, 100)
    expected = rrf_fuse([[h.chunk_id for h in vec], [h.chunk_id for h in fts]])
    hits = searcher.search(query, k=5, mode="hybrid", fusion="rrf")
    assert [h.chunk_id for h in hits] == sorted(expected, key=lambda c: (-expected[c], c))[:5]
    assert hits[0].score == pytest.approx(expected[hits[0].chunk_id])
    assert {h.scorer for h in hits} == {"hybrid"}


def test_hybrid_default_is_the_convex_fusion_of_the_two_lists(searcher):
    query = "context manager with statement"
    vec = {h.chunk_id: h.score for h in searcher.vector(query, 100)}
    fts = {h.chunk_id: h.score for h in searcher.fulltext(query, 100)}
    expected = convex_fuse(vec, fts, CONVEX_ALPHA)
    hits = searcher.search(query, k=5, mode="hybrid")
    assert [h.chunk_id for h in hits] == sorted(expected, key=lambda c: (-expected[c], c))[:5]
    assert [h.score for h in hits] == pytest.approx([expected[h.chunk_id] for h in hits])


def test_rrf_fuse_formula():
    fused = rrf_fuse([["a", "b"], ["b", "c"]], k=60)
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["a"] == pytest.approx(1 / 61) and fused["c"] == pytest.approx(1 / 62)


def test_bad_mode_and_empty_query_fail_early(searcher):
    with pytest.raises(UsageError, match="vector"):
        searcher.search("x", mode="semantic")
    with pytest.raises(UsageError):
        searcher.search("   ")


def test_without_the_full_text_index_fts_is_refused_and_nothing_written(searcher):
    searcher.table.drop_index("text_idx")
    version = searcher.store.version("embeddings")
    for mode in ("fts", "hybrid"):
        with pytest.raises(StoreError, match="no full-text index"):
            searcher.search("exception", k=1, mode=mode)
    assert searcher.search("exception", k=1, mode="vector")
    assert searcher.store.version("embeddings") == version


def test_bi_encoder_rerank_from_stored_vectors_matches_re_encoding(searcher):
    from corpusmill.search.rerank import rerank_hits

    searcher.reranker = Model(ModelSpec(kind="cross-encoder"))  # not configured
    query = "context manager block"
    fast = searcher.search(query, k=4, mode="hybrid", rerank=True)
    slow = rerank_hits(query, searcher.hybrid(query, 50), embedder=searcher.embedder)
    assert [h.chunk_id for h in fast] == [h.chunk_id for h in slow][:4]
    assert [h.score for h in fast] == pytest.approx([h.score for h in slow][:4], abs=1e-5)
    assert {h.scorer for h in fast} == {"bi-encoder"}
