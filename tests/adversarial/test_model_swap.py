"""A model swap at the same dimension, with new and changed files pending, builds the new
model's generation beside the live one instead of touching it in place (it used to be
refused, issue 15; issue 23 builds beside): the live generation gets the new and changed
files with its own model (the vectors its model gives, not the new one's) and keeps every
other row as it was; the new generation holds every document, embedded by the new model."""

from __future__ import annotations

import numpy as np

from corpusmill.model import Model
from corpusmill.store import Store
from corpusmill.store.generations import read_registry
from tests.assets.corpora import write_corpus
from tests.runs import ingest, tiny_settings


def vectors(db: str, gen_id: str) -> dict[tuple[str, str], np.ndarray]:
    """(chunk_id, content_hash) -> vector, of one generation."""
    store = Store(db)
    view = read_registry(store).get(gen_id).view(store)
    rows = view.scan("embeddings", ["chunk_id", "content_hash", "vector"]).to_pylist()
    return {(r["chunk_id"], r["content_hash"]): np.asarray(r["vector"]) for r in rows}


def test_a_model_swap_builds_beside_and_keeps_the_live_generation_current_with_its_own_model(
    tmp_path, db_uri, tiny_embedder_path, other_tiny_embedder_path
):
    corpus = write_corpus(tmp_path / "corpus", n_docs=6, min_sentences=4)
    sa = tiny_settings(db_uri, tiny_embedder_path, promote="manual")
    first = ingest([corpus], sa)
    a = first["generation"]
    before = vectors(db_uri, a)
    (corpus / "new.txt").write_text("a brand new document about swaps")
    (corpus / "doc00.txt").write_text("changed text of the first document")

    sb = tiny_settings(db_uri, other_tiny_embedder_path, promote="manual")
    swap = ingest([corpus], sb)
    assert swap["success"] and swap["live_generation"] == a != swap["generation"]
    after = vectors(db_uri, a)
    kept = {c for c in before if c in after}
    assert kept and all(np.array_equal(before[c], after[c]) for c in kept)  # untouched
    store = Store(db_uri)
    texts = {
        (r["chunk_id"], r["content_hash"]): r["text"]
        for r in store.scan(
            "embeddings", ["chunk_id", "content_hash", "text", "doc_id"]
        ).to_pylist()
        if r["doc_id"].endswith(("new.txt", "doc00.txt"))
    }
    assert texts and not set(texts) & set(before)  # the new and changed chunks
    fresh = Model(sa.embedder_spec()).embed(list(texts.values()))
    stored = np.asarray([after[c] for c in texts])
    assert (fresh * stored).sum(axis=1).min() > 0.9999  # embedded by A's model, not B's
    b_vectors = vectors(db_uri, swap["generation"])
    assert set(b_vectors) == set(after)  # every document in the new generation too
