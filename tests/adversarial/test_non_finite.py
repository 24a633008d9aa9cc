"""A NaN vector quarantines its chunk, not the run (issue 15, item 5: one non-finite
vector made LanceDB reject the commit, and the run stored 0 chunks). The model is a real
tiny BERT whose embedding row for one word is NaN, loaded by the real loading code."""

from __future__ import annotations

import numpy as np

from corpusmill.store import Store
from tests.adversarial.conftest import POISON_WORD
from tests.runs import ingest, tiny_settings


def test_a_nan_vector_quarantines_its_chunk_and_the_rest_is_stored(
    tmp_path, db_uri, poisoned_embedder_path
):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(5):
        (corpus / f"ok{i}.txt").write_text(f"document {i} about ordinary animals and plants")
    (corpus / "bad.txt").write_text(f"a note about a {POISON_WORD} in the zoo")
    summary = ingest([corpus], tiny_settings(db_uri, poisoned_embedder_path))

    assert summary["success"]
    store = Store(db_uri)
    rows = store.scan("embeddings", ["doc_id", "vector"]).to_pylist()
    assert len(rows) == 5 and not any(r["doc_id"].endswith("bad.txt") for r in rows)
    assert np.isfinite(np.array([r["vector"] for r in rows])).all()
    q = store.scan("quarantine", ["doc_id", "stage", "reason"]).to_pylist()
    assert len(q) == 1 and q[0]["stage"] == "embed" and q[0]["doc_id"].endswith("bad.txt")
    assert "non-finite" in q[0]["reason"]

    # Fixing the document clears the quarantine and embeds it.
    (corpus / "bad.txt").write_text("a note about a lion in the zoo")
    again = ingest([corpus], tiny_settings(db_uri, poisoned_embedder_path))
    assert again["success"] and Store(db_uri).count("embeddings") == 6
    assert Store(db_uri).count("quarantine") == 0
