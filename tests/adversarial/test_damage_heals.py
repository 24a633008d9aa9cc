"""Damaged vectors are detected and heal (issue 27, item 3).

The issue's damage, on a real store written by a real `ingest` with a tiny real
bi-encoder as wide as MiniLM (384: a vector is 1.5 KB, as in the issue's store): 4 KB
XORed in the middle of the newest `embeddings` data file, so a few stored vectors become
finite garbage (the file stays readable). The vector check names the rows; the next `corpusmill
ingest` finds them, does not reuse them, embeds their chunks again, says so in the plain
and the JSON summary, and exits 0; the run after it has nothing left to repair."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from corpusmill.model import Model, ModelSpec
from corpusmill.store import Store
from corpusmill.store.checks import check_vectors
from tests.adversarial.conftest import cli_env
from tools.tiny_models import save_tiny_embedder

TOPICS = ["exception", "context manager", "lambda", "generator", "decorator", "iterator"]
DAMAGE_BYTES = 4096


@pytest.fixture(scope="module")
def wide_embedder_path(tmp_path_factory) -> Path:
    return save_tiny_embedder(tmp_path_factory.mktemp("wide-tiny"), seed=3, width=384)


@pytest.fixture
def env(monkeypatch, tmp_path, wide_embedder_path):
    cli_env(monkeypatch, tmp_path / "db", wide_embedder_path)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(40):
        words = " ".join(TOPICS[(i * j + j) % len(TOPICS)] for j in range(20))
        (corpus / f"{i:02}.txt").write_text(f"note {i}: {words}, what python does {i} times")
    card = Model(ModelSpec(path=str(wide_embedder_path), dtype="float32")).card
    return str(tmp_path / "db"), corpus, card


def damage_newest_embeddings_file(db: str) -> None:
    """The issue's damage: XOR 4 KB (with 0xFF) in the middle of the newest data file."""
    data = max((Path(db) / "embeddings.lance" / "data").glob("*.lance"), key=os.path.getmtime)
    raw = bytearray(data.read_bytes())
    start = len(raw) // 2 - DAMAGE_BYTES // 2
    raw[start : start + DAMAGE_BYTES] = bytes(b ^ 0xFF for b in raw[start : start + DAMAGE_BYTES])
    data.write_bytes(bytes(raw))


def bad_rows(store: Store) -> list[str]:
    """The chunk ids whose stored vector is not finite or not of unit norm, computed here
    (not by the code under test)."""
    table = store.open("embeddings").to_arrow()
    vectors = table.column("vector").combine_chunks().flatten().to_numpy()
    vectors = vectors.reshape(table.num_rows, -1).astype(np.float64)
    with np.errstate(all="ignore"):
        bad = ~np.isfinite(vectors).all(axis=1) | (
            np.abs(np.linalg.norm(vectors, axis=1) - 1) > 1e-3
        )
    return sorted(c for c, b in zip(table.column("chunk_id").to_pylist(), bad, strict=True) if b)


def ingest(capsys, corpus, *flags) -> tuple[int, str, str]:
    code = main(["ingest", str(corpus), *flags])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_damaged_vectors_are_named_not_reused_and_healed_by_the_next_ingest(env, capsys):
    db, corpus, card = env
    code, _out, err = ingest(capsys, corpus, "--json")
    assert code == 0, err
    store = Store(db)
    damage_newest_embeddings_file(db)
    damaged = bad_rows(store)
    assert damaged, "the damage left every vector passing: the test damaged nothing"
    # The check names the rows it found.
    outcome = check_vectors(store, card)
    assert not outcome.passed and damaged[0] in outcome.description
    assert damaged[0] in str(outcome.metadata.get("damaged_chunk_ids"))

    # The next ingest: the plain summary says what was found and repaired; it succeeds,
    # and only the damaged rows were embedded again.
    code, out, err = ingest(capsys, corpus)
    assert code == 0, err
    assert f"{len(damaged)} stored vectors were damaged and not reused" in err
    assert damaged[0] in err
    assert f"vectors_damaged: {len(damaged)}" in out
    assert f"vectors_repaired: {len(damaged)}" in out
    assert f"chunks_embedded: {len(damaged)}" in out
    assert bad_rows(store) == [] and check_vectors(store, card).passed

    # The same damage again, and the JSON summary: counted, named, repaired.
    damage_newest_embeddings_file(db)
    n = len(bad_rows(store))
    assert n > 0
    code, out, err = ingest(capsys, corpus, "--json")
    summary = json.loads(out)
    assert code == 0 and summary["success"], err
    assert summary["vectors_damaged"] == summary["vectors_repaired"] == n
    assert summary["vectors_damaged_sample"].count("norm") >= 1
    assert summary["checks"]["vectors_valid"] is True

    # Nothing left to heal: the next run finds no damage and embeds nothing.
    code, out, err = ingest(capsys, corpus, "--json")
    summary = json.loads(out)
    assert code == 0 and summary["success"], err
    assert (summary["vectors_damaged"], summary["chunks_embedded"]) == (0, 0)
