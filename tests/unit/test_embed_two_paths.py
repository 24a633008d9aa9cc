"""The in-process path and the Ray path decide the same, on the same chunks.

One store holding every case the per-chunk rules tell apart is built twice; the in-process
path (`sync_embeddings`) runs on one copy and the Ray path (`sync_embeddings_on_ray`, its
workers in this process, the driver's plan and single commit as on a cluster) on the
other, both with the same labelled FAKE embedder. Compared: the documents found stale and
gone, what went to the engine and as what (stored ids or text), what was reused, what was
quarantined and why, and every column of every row of `embeddings`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from corpusmill.ids import doc_key
from corpusmill.model.card import ModelCard
from corpusmill.model.spec import ModelSpec
from corpusmill.scale.worker import EmbedWorker
from corpusmill.store import Store, chunks_schema, embeddings_schema, rows_to_table
from corpusmill.sync.embed_step import NON_FINITE
from tests.embed_paths import POISON, TOO_LARGE, TOO_LARGE_REASON, FakeEmbedder, in_process

pytest.importorskip("lance")

DIM = 8
CARD = ModelCard("fake/embedder", "r1", DIM, "mean", True, 64)
TOKENIZER = "tok-A"
PARTS = ["shard-00", "shard-01"]


def _unit(seed: int) -> list[float]:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return (v / np.linalg.norm(v)).tolist()


def _chunk(doc: str, pos: int, text: str, part: str, ids=None, made_by=None) -> dict:
    return {
        "chunk_id": f"{doc}:{pos}",
        "doc_id": doc,
        "doc_key": doc_key(doc),
        "source": "src",
        "uri": f"{doc}.txt",
        "partition": part,
        "position": pos,
        "text": text,
        "content_hash": f"h({text})",
        "doc_hash": f"d({doc})",
        "n_tokens": len(text.split()),
        "chunker": "v1",
        "input_ids": ids,
        "tokenizer": made_by,
    }


def _stored(chunk: dict, vector: list[float]) -> dict:
    row = {k: v for k, v in chunk.items() if k not in ("input_ids", "tokenizer")}
    return {**row, "vector": vector, "model_id": CARD.model_id}


# What `chunks` holds, and what `embeddings` held before the step, case by case.
SAME = [_chunk("same", 0, "unchanged text", "shard-00")]
CHANGED_OLD = [
    _chunk("changed", 0, "kept part", "shard-01"),
    _chunk("changed", 1, "old", "shard-01"),
]
CHANGED = [CHANGED_OLD[0], _chunk("changed", 1, "new part", "shard-01")]
CHUNKS = [
    *SAME,
    *CHANGED,
    _chunk("ids", 0, "has our ids", "shard-00", [101, 7, 8, 102], TOKENIZER),
    _chunk("other-ids", 0, "has their ids", "shard-01", [101, 9, 102], "tok-B"),
    _chunk("no-ids", 0, "has no ids", "shard-00"),
    _chunk("copy", 0, "unchanged text", "shard-01"),  # the content of `same`: reused
    _chunk("damaged", 0, "text with a damaged vector", "shard-00"),
    _chunk("poison", 0, f"a {POISON} chunk", "shard-01"),
    _chunk("poison", 1, "its healthy sibling", "shard-01"),
    _chunk("huge", 0, f"a {TOO_LARGE} chunk", "shard-00"),
]
GONE = _chunk("gone", 0, "text with a damaged vector", "shard-00")  # in embeddings only
EMBEDDED_BEFORE = [
    _stored(SAME[0], _unit(1)),
    _stored(CHANGED_OLD[0], _unit(2)),
    _stored(CHANGED_OLD[1], _unit(3)),
    _stored(GONE, [2.0] + [0.0] * (DIM - 1)),  # not unit length: never reused
]


def _store(uri: str) -> Store:
    store = Store(uri)
    chunks = store.ensure("chunks", chunks_schema())
    store.replace_rows(chunks, "chunk_id", rows_to_table(CHUNKS, chunks_schema()), None)
    table = store.ensure_embeddings(CARD)
    rows = rows_to_table(EMBEDDED_BEFORE, embeddings_schema(CARD))
    store.replace_rows(table, "chunk_id", rows, None)
    return store


def _rows(store: Store) -> list[dict]:
    names = store.open("embeddings").schema.names
    return sorted(store.scan("embeddings", names).to_pylist(), key=lambda r: r["chunk_id"])


def _decisions(report) -> dict:
    meta = report.as_metadata()
    meta.pop("sync_seconds")
    return {
        **meta,
        "failed": sorted(report.failed, key=lambda q: q.uri),
        "embedded_by_partition": dict(report.embedded_by_partition),
    }


@pytest.fixture
def keep_torch_threads():
    """An `EmbedWorker` sets torch's thread count for its actor; here that is this process."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_both_paths_make_the_same_decisions_and_rows(tmp_path, keep_torch_threads):
    from corpusmill.scale.ray_embed import plan_units, sync_embeddings_on_ray
    from corpusmill.sync import sync_embeddings

    local_store, ray_store = _store(str(tmp_path / "local")), _store(str(tmp_path / "ray"))
    local_model, ray_model = FakeEmbedder(DIM), FakeEmbedder(DIM)

    class FakeModelWorker(EmbedWorker):
        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            self.model = ray_model  # type: ignore[assignment]

    local = sync_embeddings(
        local_store, local_model.embed_stream, CARD, PARTS, tokenizer_id=TOKENIZER
    )
    plan = plan_units(ray_store, PARTS, workers=2, batch_rows=2)
    on_ray, stats = sync_embeddings_on_ray(
        ray_store,
        ModelSpec(),
        CARD,
        PARTS,
        run_key="both-paths",
        workers=2,
        tokenizer_id=TOKENIZER,
        batch_rows=2,
        worker=FakeModelWorker,
        map_units=in_process,
    )
    assert stats.units > 1 and stats.commit is not None and stats.commit.committed

    # The same decisions ...
    assert _decisions(on_ray) == _decisions(local)
    assert sorted(ray_model.inputs, key=repr) == sorted(local_model.inputs, key=repr)
    # ... and the same rows, every column, every vector bit.
    assert _rows(ray_store) == _rows(local_store)

    # What those decisions are, so the comparison above is of something.
    stale = ["changed", "copy", "damaged", "huge", "ids", "no-ids", "other-ids", "poison"]
    assert plan.changes.stale == stale and plan.changes.gone == ["gone"]
    assert sorted(local_model.inputs, key=repr) == sorted(
        [
            ("ids", (101, 7, 8, 102)),  # stored ids made by this tokenizer
            ("text", "has their ids"),  # another tokenizer's ids: the text
            ("text", "has no ids"),
            ("text", "new part"),
            ("text", "text with a damaged vector"),  # its stored vector is not unit length
            ("text", f"a {POISON} chunk"),
            ("text", "its healthy sibling"),
            ("text", f"a {TOO_LARGE} chunk"),
        ],
        key=repr,
    )
    failed = {q.uri: q.reason for q in local.failed}
    assert failed == {"poison.txt#chunk0": NON_FINITE, "huge.txt#chunk0": TOO_LARGE_REASON}
    assert (local.chunks_embedded, local.chunks_failed) == (6, 2)
    assert local.chunks_reused == len(CHUNKS) - 6 - 2  # same, changed:0 and copy
    assert local.documents_updated == len(stale) and local.documents_removed == 1
    rows = {r["chunk_id"]: r for r in _rows(local_store)}
    assert "poison:0" not in rows and "huge:0" not in rows and "gone:0" not in rows
    assert rows["copy:0"]["vector"] == rows["same:0"]["vector"] == pytest.approx(_unit(1))
    assert rows["changed:0"]["vector"] == pytest.approx(_unit(2))
    assert set(rows) == {c["chunk_id"] for c in CHUNKS} - {"poison:0", "huge:0"}


def test_the_plan_ships_ids_only(tmp_path):
    from corpusmill.scale.ray_embed import plan_units

    plan = plan_units(_store(str(tmp_path / "db")), PARTS, workers=2, batch_rows=2)
    units = pa.Table.from_pylist(plan.units)
    assert units.column_names == ["chunk_ids", "fragments", "reuse"]
    # the content of `same` (for `copy`) and of `changed:0` are reused; the damaged one is
    # offered too (it is stored), and the worker's check turns it down
    reuse = {h for u in plan.units for h in u["reuse"]}
    assert reuse == {"h(unchanged text)", "h(kept part)", "h(text with a damaged vector)"}


class Boom(Exception):
    pass


def test_a_windows_groups_commit_together_off_the_engines_threads(tmp_path, monkeypatch):
    """In-process: the document groups one engine window completes are one commit of
    `embeddings` (up to COMMIT_DOCS documents), made on the committer's thread; a failed
    commit is raised by the step and nothing is written after it."""
    import threading

    import corpusmill.sync.embeddings as step

    monkeypatch.setattr(step, "DOC_GROUP", 2)  # the 8 stale documents: 4 groups

    def run(uri: str, commit_docs: int, fail: bool = False, commits=None) -> list:
        monkeypatch.setattr(step, "COMMIT_DOCS", commit_docs)
        _store(uri)
        commits = [] if commits is None else commits

        def on_commit(table: str) -> None:
            commits.append((table, threading.current_thread().name))
            if fail and table == "embeddings":
                raise Boom("the disk filled up")

        store = Store(uri, on_commit=on_commit)
        model = FakeEmbedder(DIM)

        def embed(items, sink):  # one window holds every chunk to embed
            model.embed_stream(items, sink, window=100)

        step.sync_embeddings(store, embed, CARD, PARTS, tokenizer_id=TOKENIZER)
        return commits

    one = run(str(tmp_path / "one"), commit_docs=4096)
    # One commit for the window's four groups, then the gone document's delete.
    assert [t for t, _ in one] == ["embeddings", "embeddings"]
    assert one[0][1] != threading.current_thread().name  # the committer's thread
    assert [t for t, _ in run(str(tmp_path / "two"), commit_docs=4)] == ["embeddings"] * 3
    tried: list[tuple[str, str]] = []
    with pytest.raises(Boom):
        run(str(tmp_path / "fail"), commit_docs=2, fail=True, commits=tried)
    assert [t for t, _ in tried] == ["embeddings"]  # the three groups after it: not written
