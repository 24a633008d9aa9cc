"""The embeddings step's per-chunk rules (corpusmill/sync/embed_step.py), one by one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from corpusmill.engine.inputs import TokenIds
from corpusmill.model.card import ModelCard
from corpusmill.sources import Quarantined
from corpusmill.store import embeddings_schema
from corpusmill.sync.embed_step import (
    NON_FINITE,
    ChunkBatch,
    EmbedRules,
    Outcome,
    stored_vectors,
)

CARD = ModelCard("org/model", "r", 4, "mean", True, 64)
RULES = EmbedRules(CARD, tokenizer_id="tok")


def _row(cid: str, digest: str, **extra) -> dict:
    return {
        "chunk_id": cid,
        "doc_id": f"doc-{cid}",
        "doc_key": "k",
        "source": "s",
        "uri": f"{cid}.txt",
        "partition": "shard-03",
        "position": 2,
        "text": f"text of {cid}",
        "content_hash": digest,
        "doc_hash": "d",
        "n_tokens": 3,
        "chunker": "v1",
        **extra,
    }


def test_a_vector_must_be_finite_of_the_models_dimension_and_unit_length_when_normalised():
    good = np.array([0.6, 0.8, 0.0, 0.0], np.float32)
    rows = np.stack([good, [np.nan, 0, 0, 0], [np.inf, 0, 0, 0], 2 * good, np.zeros(4)])
    problems = RULES.check_vectors(rows)
    assert problems[0] is None
    assert problems[1] == problems[2] == NON_FINITE
    assert "norm is 2" in str(problems[3]) and "norm is 0" in str(problems[4])
    # A model that does not normalise: any finite length but zero will do.
    plain = EmbedRules(dataclasses.replace(CARD, normalize=False))
    assert plain.check_vectors(rows) == [None, NON_FINITE, NON_FINITE, None, "the vector is zero"]
    assert RULES.check_vectors(np.zeros((2, 3))) == ["the vector has 3 dimensions, the model 4"] * 2
    # The engine's own failure comes first.
    assert RULES.verdicts(rows[:2], {1: "too large"}) == [None, "too large"]


def test_stored_ids_are_used_only_when_this_embedders_tokenizer_made_them():
    ours = _row("a", "h", input_ids=[101, 5, 102], tokenizer="tok")
    chunks = pa.Table.from_pylist(
        [
            ours,
            {**ours, "tokenizer": "other"},
            {**ours, "input_ids": None},
            {**ours, "input_ids": [7, 8]},
        ]
    )
    assert RULES.engine_inputs(chunks) == [
        TokenIds([101, 5, 102]),
        "text of a",  # another tokenizer's ids
        "text of a",  # none stored
        TokenIds([7, 8]),
    ]
    old = pa.Table.from_pylist([_row("a", "h")])  # a table from before the column
    assert RULES.engine_inputs(old) == ["text of a"]
    assert EmbedRules(CARD).engine_inputs(chunks) == ["text of a"] * 4  # never trusted


def test_a_quarantined_chunk_is_named_by_its_uri_and_position():
    q = RULES.quarantined(_row("a", "h"), "why")
    assert q == Quarantined("doc-a", "s", "a.txt#chunk2", "why")


def test_a_damaged_stored_vector_is_not_reused():
    schema = pa.schema([("content_hash", pa.string()), ("vector", pa.list_(pa.float32(), 4))])
    found = pa.Table.from_pylist(
        [
            {"content_hash": "ok", "vector": [1.0, 0.0, 0.0, 0.0]},
            {"content_hash": "nan", "vector": [float("nan"), 0.0, 0.0, 0.0]},
            {"content_hash": "long", "vector": [3.0, 0.0, 0.0, 0.0]},
        ],
        schema=schema,
    )
    asked = []

    def scan_in(columns, column, values):
        asked.append((list(columns), column, list(values)))
        return found

    assert stored_vectors(scan_in, [], RULES) == {} and asked == []  # nothing to look up
    stored = stored_vectors(scan_in, ["ok", "nan", "long", "ok"], RULES)
    assert list(stored) == ["ok"] and asked == [
        (["content_hash", "vector"], "content_hash", ["long", "nan", "ok"])
    ]


def test_a_batch_reuses_embeds_quarantines_and_writes_its_rows():
    stored = {"known": np.array([0.0, 1.0, 0.0, 0.0], np.float32)}
    rows = [
        _row("a", "known", input_ids=[1, 2], tokenizer="tok"),
        _row("b", "new", input_ids=[1, 3], tokenizer="tok"),
        _row("c", "bad"),
    ]
    batch = ChunkBatch(RULES, rows, stored)
    assert batch.todo == [("b", TokenIds([1, 3])), ("c", "text of c")] and not batch.ready
    engine_rows = np.array([[0, 0, 1, 0], [np.nan] * 4], np.float32)
    batch.take_all(engine_rows, {})
    assert batch.ready
    assert batch.outcome.embedded == {"shard-03": 1}
    assert batch.outcome.failed == [Quarantined("doc-c", "s", "c.txt#chunk2", NON_FINITE)]
    assert Outcome.from_json(batch.outcome.to_json()) == batch.outcome

    table = batch.table()
    assert table.schema == embeddings_schema(CARD).remove_metadata()
    assert table["chunk_id"].to_pylist() == ["a", "b"]  # c stays out
    assert table["vector"].to_pylist() == [[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]
    assert set(table["model_id"].to_pylist()) == {"org/model"}
    assert "input_ids" not in table.column_names


def test_stored_ids_reach_the_engine_as_array_views_and_collate_as_lists_do():
    """No Python int per stored token: the ids are views into the scanned column, and a
    batch of them (alone, or mixed with a tokenizer's lists) collates to the same tensors."""
    import torch

    from corpusmill.engine.inputs import collate, collate_packed

    rows = pa.Table.from_pylist(
        [
            _row("a", "h", input_ids=[101, 5, 6, 102], tokenizer="tok"),
            _row("b", "h", input_ids=[101, 7, 102], tokenizer="tok"),
        ]
    )
    at = rows.schema.get_field_index("input_ids")
    rows = rows.set_column(at, "input_ids", rows["input_ids"].cast(pa.list_(pa.int32())))
    inputs = RULES.engine_inputs(rows)  # int32, as `chunks` stores them
    assert all(isinstance(t, TokenIds) and isinstance(t.ids, np.ndarray) for t in inputs)
    arrays = [{"input_ids": t.ids} for t in inputs]
    lists = [{"input_ids": [int(i) for i in t.ids]} for t in inputs]
    for make in (lambda batch: collate(batch, 0), collate_packed):
        want = make(lists)
        for got in (make(arrays), make([arrays[0], lists[1]])):
            assert want.keys() == got.keys()
            for key, tensor in want.items():
                assert got[key].dtype == torch.int64 and torch.equal(got[key], tensor), key
