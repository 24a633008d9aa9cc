"""A run stopped right after each of its commits, in turn, then rerun: the store ends
exactly as one clean run leaves it (issue 15: random SIGKILLs were tried before; this
covers every commit boundary, a stop between two embeddings commits included).

The stop is the store's `on_commit` hook raising once the Nth commit is durable: nothing of the run
after that commit happens, which is what a kill at that instant leaves on disk (a commit
is atomic in LanceDB; tests/e2e/test_faults_inbox.py kills real processes at random
moments). Groups are shrunk to 2 documents so each table takes several commits.
"""

from __future__ import annotations

import shutil
from collections import Counter

import pytest

import corpusmill.sync.chunks
import corpusmill.sync.documents
import corpusmill.sync.embeddings
from corpusmill.store import Store
from tests.runs import ingest, tiny_settings


class Stop(Exception):
    """The simulated crash."""


def state(db: str) -> dict:
    store = Store(db)
    emb = store.scan("embeddings", ["chunk_id", "doc_id", "content_hash"]).to_pylist()
    chunk_ids = Counter(r["chunk_id"] for r in emb)
    assert max(chunk_ids.values(), default=1) == 1, "a chunk stored twice"
    return {
        "documents": sorted(
            (r["doc_id"], r["content_hash"])
            for r in store.scan("documents", ["doc_id", "content_hash"]).to_pylist()
        ),
        "chunks": sorted(store.scan("chunks", ["chunk_id"])["chunk_id"].to_pylist()),
        "embeddings": sorted((r["chunk_id"], r["doc_id"], r["content_hash"]) for r in emb),
        "quarantine": sorted(
            store.scan("quarantine", ["quarantine_id"])["quarantine_id"].to_pylist()
        ),
    }


@pytest.mark.slow
def test_a_stop_after_any_commit_then_a_rerun_converges(tmp_path, tiny_embedder_path, monkeypatch):
    for module in (corpusmill.sync.documents, corpusmill.sync.chunks, corpusmill.sync.embeddings):
        monkeypatch.setattr(module, "DOC_GROUP", 2)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(6):
        (corpus / f"d{i}.txt").write_text(
            f"document {i} " + " ".join(f"w{i}x{j}" for j in range(40))
        )
    base = str(tmp_path / "base")
    assert ingest([corpus], tiny_settings(base, tiny_embedder_path))["success"]
    # The run under test: two changed, one deleted, two new, one bad file.
    (corpus / "d0.txt").write_text("document zero rewritten " * 10)
    (corpus / "d1.txt").write_text("document one rewritten " * 10)
    (corpus / "d2.txt").unlink()
    for i in (6, 7):
        (corpus / f"d{i}.txt").write_text(f"new document {i} " * 12)
    (corpus / "bad.txt").write_bytes(b"\x00binary")

    commits: list[str] = []
    clean = str(tmp_path / "clean")
    shutil.copytree(base, clean)
    assert ingest([corpus], tiny_settings(clean, tiny_embedder_path), on_commit=commits.append)[
        "success"
    ]
    expected = state(clean)
    assert commits.count("embeddings") >= 2 and commits.count("chunks") >= 2

    stopped_states_differ = []
    for n in range(1, len(commits) + 1):
        db = str(tmp_path / f"trial{n}")
        shutil.copytree(base, db)
        seen = []

        def stop_after_nth(table: str, n=n, seen=seen) -> None:
            seen.append(table)
            if len(seen) == n:
                raise Stop(f"stopped after commit {n} ({table})")

        with pytest.raises(Stop):
            ingest([corpus], tiny_settings(db, tiny_embedder_path), on_commit=stop_after_nth)
        stopped_states_differ.append(state(db) != expected)
        assert ingest([corpus], tiny_settings(db, tiny_embedder_path))["success"]
        assert state(db) == expected, f"after a stop at commit {n} ({commits[n - 1]})"
        shutil.rmtree(db)
    # The stops really left unfinished stores (the comparison above is not vacuous).
    assert sum(stopped_states_differ) >= len(commits) - 2
