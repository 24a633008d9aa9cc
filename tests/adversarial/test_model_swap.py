"""A model swap refused before any write: documents, chunks and embeddings stay exactly
as they were, byte for byte (issue 15, item 6: documents and chunks used to be rewritten
before the embeddings step refused)."""

from __future__ import annotations

import pytest

from corpusmill.errors import ModelMismatchError
from corpusmill.store import Store
from tests.adversarial.conftest import store_snapshot
from tests.assets.corpora import write_corpus
from tests.runs import ingest, tiny_settings


def test_a_refused_model_swap_leaves_the_store_unchanged(
    tmp_path, db_uri, tiny_embedder_path, other_tiny_embedder_path
):
    corpus = write_corpus(tmp_path / "corpus", n_docs=6, min_sentences=4)
    assert ingest([corpus], tiny_settings(db_uri, tiny_embedder_path))["success"]
    # Something for the refused run to write if it got that far: a new and a changed file.
    (corpus / "new.txt").write_text("a brand new document about swaps")
    (corpus / "doc00.txt").write_text("changed text of the first document")
    store = Store(db_uri)
    versions = {t: store.version(t) for t in store.table_names()}
    files = store_snapshot(db_uri)

    with pytest.raises(ModelMismatchError, match="CORPUSMILL_MODEL"):
        ingest([corpus], tiny_settings(db_uri, other_tiny_embedder_path))

    assert {t: Store(db_uri).version(t) for t in store.table_names()} == versions
    assert store_snapshot(db_uri) == files
