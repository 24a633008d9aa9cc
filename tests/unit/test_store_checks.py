"""The embeddings checks (corpusmill/store/checks.py) on real LanceDB tables: each passes on a
good table and fails, saying why, on a table broken in its one way."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from corpusmill.ids import doc_key
from corpusmill.model.card import ModelCard
from corpusmill.store import Store, chunk_fields, chunks_schema, rows_to_table
from corpusmill.store.checks import check_coverage, check_model_card, check_vectors

CARD = ModelCard("org/model", "abc123", 4, "mean", True, 128)


def _chunk(i: int, digest: str | None = None) -> dict:
    row = {f.name: f"{f.name}-{i}" for f in chunk_fields() if pa.types.is_string(f.type)}
    row |= {"position": 0, "n_tokens": 3, "partition": "shard-00", "text": f"text {i}"}
    row |= {"doc_key": doc_key(f"doc_id-{i}"), "content_hash": digest or f"h{i}"}
    return row


def _unit(i: int) -> list[float]:
    v = np.arange(1, 5, dtype=np.float32) + i
    return (v / np.linalg.norm(v)).tolist()


@pytest.fixture
def good(db_uri) -> Store:
    """Three chunks, each with one unit-length embedding from CARD's model."""
    store = Store(db_uri)
    chunks = [_chunk(i) for i in range(3)]
    store.db.create_table("chunks", rows_to_table(chunks, chunks_schema()))
    table = store.ensure_embeddings(CARD)
    table.add(_embedded(chunks))
    return store


def _embedded(chunks, vectors=None):
    from corpusmill.store import embeddings_schema

    rows = [
        {k: v for k, v in c.items() if k not in ("input_ids", "tokenizer")}
        | {"vector": (vectors[i] if vectors else _unit(i)), "model_id": CARD.model_id}
        for i, c in enumerate(chunks)
    ]
    return rows_to_table(rows, embeddings_schema(CARD))


def test_a_good_table_passes_every_check(good):
    for outcome in (check_vectors(good, CARD), check_coverage(good), check_model_card(good, CARD)):
        assert outcome.passed, outcome.description
    assert check_vectors(good, CARD).metadata["rows"] == 3


def test_infinite_vectors_fail(good):
    # (LanceDB itself refuses NaN on add, so inf is what can get in.)
    good.open("embeddings").add(_embedded([_chunk(7)], [[np.inf, 0.0, 0.0, 1.0]]))
    outcome = check_vectors(good, CARD)
    assert not outcome.passed and "1 vectors with NaN or inf" in outcome.description
    assert outcome.metadata["non_finite_vectors"] == 1


def test_vectors_not_unit_length_fail_when_the_model_normalises(good):
    good.open("embeddings").add(_embedded([_chunk(7)], [[3.0, 0.0, 0.0, 0.0]]))
    outcome = check_vectors(good, CARD)
    assert not outcome.passed and outcome.metadata["bad_norm_vectors"] == 1
    assert outcome.metadata["max_norm"] == 3.0
    # The same vector is fine for a model that does not normalise.
    assert check_vectors(good, dataclasses.replace(CARD, normalize=False)).passed


def test_vectors_of_another_dimension_fail(good):
    outcome = check_vectors(good, dataclasses.replace(CARD, dimension=8))
    assert not outcome.passed and "not of dimension 8" in outcome.description
    assert outcome.metadata["wrong_dimension_vectors"] == 3


def test_a_chunk_without_an_embedding_fails(good):
    good.open("chunks").add(rows_to_table([_chunk(9)], chunks_schema()))
    outcome = check_coverage(good)
    assert not outcome.passed and outcome.metadata["missing"] == 1


def test_duplicate_ids_fail(good):
    good.open("embeddings").add(_embedded([_chunk(1)]))
    outcome = check_coverage(good)
    assert not outcome.passed and outcome.metadata["duplicate_ids"] == 1


def test_an_embedding_of_old_content_or_of_a_gone_chunk_fails(good):
    good.open("chunks").update(where="chunk_id = 'chunk_id-0'", values={"content_hash": "new"})
    good.open("chunks").delete("chunk_id = 'chunk_id-2'")
    outcome = check_coverage(good)
    assert not outcome.passed
    assert outcome.metadata["outdated"] == 1 and outcome.metadata["orphaned"] == 1


def test_another_model_fails_the_card_check(good):
    outcome = check_model_card(good, dataclasses.replace(CARD, revision="fff000"))
    assert not outcome.passed and "revision: table 'abc123', configured 'fff000'" in (
        outcome.description
    )
    assert "CORPUSMILL_MODEL" in outcome.description


def test_no_table_yet_fails_with_what_to_do(db_uri):
    outcome = check_vectors(Store(db_uri), CARD)
    assert not outcome.passed and "materialise" in outcome.description


def test_the_checks_of_a_run_read_its_own_shards_only(good):
    """Another run is half-way through shard-01 (chunks committed, vectors not yet): a run
    on shard-00 passes; a check of shard-01, or of the whole table, fails."""
    half_written = [_chunk(i) | {"partition": "shard-01"} for i in range(10, 13)]
    good.open("chunks").add(rows_to_table(half_written, chunks_schema()))
    mine = check_coverage(good, ["shard-00"])
    assert mine.passed, mine.description
    assert mine.metadata["chunks"] == 3 and mine.metadata["shards_checked"] == 1
    theirs = check_coverage(good, ["shard-01"])
    assert not theirs.passed and theirs.metadata["missing"] == 3
    assert not check_coverage(good).passed  # unpartitioned: the whole table
    assert check_coverage(good).metadata["shards_checked"] == "all"


def test_the_vector_check_of_a_run_reads_its_own_shards_only(good):
    bad = [_chunk(7) | {"partition": "shard-01"}]
    good.open("embeddings").add(_embedded(bad, [[3.0, 0.0, 0.0, 0.0]]))
    assert check_vectors(good, CARD, partitions=["shard-00"]).passed
    assert not check_vectors(good, CARD, partitions=["shard-01"]).passed
    assert not check_vectors(good, CARD).passed
