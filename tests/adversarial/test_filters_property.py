"""Arbitrary filter strings never match an extra row (hypothesis), on the search path
(`--doc-id`, `--source`) and on the write path (`in_filter`, whose values are ids)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corpusmill.ids import doc_id_for, partition_of
from corpusmill.model import Model, ModelSpec
from corpusmill.search import Searcher
from corpusmill.store import Store, in_filter, rows_to_table
from corpusmill.store.upkeep import index_for_search

DOCS = {
    doc_id_for("pydoc", "try"): "try and except catch an exception",
    doc_id_for("notes", "x' OR '1'='1"): "an id that looks like an injection",
    doc_id_for("notes", "a\\'b"): "a backslash before a quote",
}
_VALUES = st.text(max_size=30) | st.sampled_from(
    ["' OR 1=1 --", "x\\') OR (1=1) --", "%", "_", "*", "pydoc", "notes"] + list(DOCS)
)


@pytest.fixture(scope="module")
def searcher(tmp_path_factory, tiny_embedder_path):
    embedder = Model(ModelSpec(path=str(tiny_embedder_path), dtype="float32"))
    store = Store(str(tmp_path_factory.mktemp("filters") / "db"))
    table = store.ensure_embeddings(embedder.card)
    rows = []
    for i, ((doc_id, text), vec) in enumerate(
        zip(DOCS.items(), embedder.embed(list(DOCS.values())), strict=True)
    ):
        rows.append(
            {
                "chunk_id": f"c{i}",
                "doc_id": doc_id,
                "doc_key": f"k{i}",
                "source": doc_id.split("#", 1)[0],
                "uri": doc_id,
                "partition": partition_of(doc_id),
                "position": 0,
                "text": text,
                "content_hash": f"h{i}",
                "doc_hash": f"d{i}",
                "n_tokens": 8,
                "chunker": "t",
                "vector": vec.tolist(),
                "model_id": embedder.card.model_id,
            }
        )
    table.add(
        rows_to_table([{k: r.get(k) for k in table.schema.names} for r in rows], table.schema)
    )
    index_for_search(store)  # a writer's step: the searcher never builds an index
    searcher = Searcher(store.uri, embedder=embedder)
    return searcher


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=_VALUES, mode=st.sampled_from(["vector", "fts", "hybrid"]))
def test_search_filters_never_match_an_extra_row(searcher, value, mode):
    for field in ("doc_id", "source"):
        hits = searcher.search("exception injection quote", k=10, mode=mode, **{field: value})
        assert all(getattr(h, field) == value for h in hits)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(values=st.lists(_VALUES.filter(lambda v: "\\" not in v), min_size=1, max_size=3))
def test_write_path_filters_never_match_an_extra_row(searcher, values):
    expected = sum(1 for d in DOCS if d in values)
    assert searcher.store.count("embeddings", in_filter("doc_id", values)) == expected
