"""The Ray path's driver and worker logic without a Ray cluster: the driver plans ids only,
each `EmbedWorker` (run in-process here, as an actor would run it) reads its own chunks,
reuses stored vectors by content hash, embeds the rest and writes a fragment; the driver
commits once. Checked against the local path's rows. The same path on a real Ray cluster:
tests/e2e/test_ray_embeddings.py (needs root for the network namespace)."""

import shutil
from collections import Counter

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest

from app.runs import run_ingest
from corpusmill.model import LOADS, Model
from corpusmill.store import Store
from corpusmill.sync.scope import docs_filter
from corpusmill.sync.shards import shard_counts
from tests.embed_paths import in_process
from tests.runs import CHUNKS, tiny_settings

pytest.importorskip("lance")


def _corpus(root):
    root.mkdir()
    for i in range(8):
        text = " ".join(f"topic{i} sentence {j} about item {i * j}." for j in range(6 + i))
        (root / f"doc{i:02d}.txt").write_text(text)
    # Same content as doc03 under another name: its chunks can reuse doc03's vectors.
    (root / "copy03.txt").write_text((root / "doc03.txt").read_text())
    return root


def ray_options(model: Model) -> dict:
    """Two workers run in this process, four chunks a unit."""
    return {
        "workers": 2,
        "tokenizer_id": model.tokenizer_id,
        "batch_rows": 4,
        "map_units": in_process,
    }


def test_workers_read_their_own_chunks_and_match_the_local_path(
    tmp_path, db_uri, tiny_embedder_path
):
    from corpusmill.scale.ray_embed import plan_units, sync_embeddings_on_ray

    corpus = _corpus(tmp_path / "corpus")
    settings = tiny_settings(db_uri, tiny_embedder_path)
    summary = run_ingest(
        [str(corpus)], settings, instance=dg.DagsterInstance.ephemeral(), chunk_config=CHUNKS
    )
    assert summary["success"]
    store = Store(db_uri)
    local = {
        r["chunk_id"]: r
        for r in store.scan("embeddings", ["chunk_id", "content_hash", "vector"]).to_pylist()
    }
    docs = sorted({r["doc_id"] for r in store.scan("chunks", ["doc_id"]).to_pylist()})
    copy = next(d for d in docs if "copy03" in d)
    # Drop the vectors of four documents (copy03's content stays known through doc03).
    dropped = [d for d in docs if "doc" in d.rsplit("#", 1)[-1] and "doc03" not in d][:3] + [copy]
    store.replace_rows(store.open("embeddings"), "chunk_id", None, docs_filter(dropped))

    embedder = Model(settings.embedder_spec())
    parts = sorted(set(store.scan("chunks", ["partition"])["partition"].to_pylist()))
    plan = plan_units(store, parts, workers=2, batch_rows=4)
    assert sorted(plan.changes.stale) == sorted(dropped) and not plan.changes.gone
    shipped = pa.Table.from_pylist(plan.units).column_names
    assert shipped == ["chunk_ids", "fragments", "reuse"]  # ids only: no text, no token ids
    assert any(u["reuse"] for u in plan.units)

    loads = LOADS["embedder"]
    report, stats = sync_embeddings_on_ray(
        store, embedder.spec, embedder.card, parts, run_key="test-run", **ray_options(embedder)
    )
    # One load for every unit (a worker counts its process's loads: here, this process's).
    assert LOADS["embedder"] == loads + 1 and stats.model_loads == LOADS["embedder"]
    assert stats.commit is not None and stats.commit.committed
    copy_chunks = sum(
        1 for r in store.scan("chunks", ["doc_id"]).to_pylist() if r["doc_id"] == copy
    )
    stale_chunks = sum(len(u["chunk_ids"]) for u in plan.units)
    assert report.chunks_embedded == stale_chunks - copy_chunks  # copy03's were reused
    assert stats.input_bytes_shipped < 100 * stale_chunks

    rows = store.scan("embeddings", ["chunk_id", "content_hash", "vector", "partition"])
    ids = Counter(rows["chunk_id"].to_pylist())
    assert set(ids.values()) == {1} and ids.keys() == local.keys()
    for r in rows.to_pylist():
        a, b = np.asarray(r["vector"]), np.asarray(local[r["chunk_id"]]["vector"])
        assert r["content_hash"] == local[r["chunk_id"]]["content_hash"]
        assert float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) >= 0.9999
    # Per shard: what the workers say they embedded is what the shard gained.
    per_shard = shard_counts(store, "embeddings", parts)
    assert sum(c["rows"] for c in per_shard.values()) == len(local)
    embedded = Counter(report.embedded_by_partition)
    assert sum(embedded.values()) == report.chunks_embedded
    assert set(embedded) <= set(parts)

    # Nothing stale: no units, no commit, no load.
    assert plan_units(store, parts, workers=2, batch_rows=4).units == []


def test_the_ray_path_builds_a_new_generation_through_its_store_view(
    tmp_path, db_uri, tiny_embedder_path
):
    """A generation built beside the live one on the Ray path: the driver plans against
    the new generation's `chunks`, the workers (opened from the view's picklable ref) read
    and write its tables, one keyed commit lands in `embeddings_<id>`, the live tables are
    not touched, and the rows are the local path's."""
    from corpusmill.chunking import TokenChunker
    from corpusmill.lifecycle.targets import register_configured
    from corpusmill.scale.ray_embed import sync_embeddings_on_ray
    from corpusmill.sync import sync_chunks, sync_embeddings
    from tests.generations import save_model_b
    from tools.tiny_models import TINY_MAX_SEQ

    corpus = _corpus(tmp_path / "corpus")
    settings = tiny_settings(db_uri, tiny_embedder_path)
    assert run_ingest([str(corpus)], settings, instance=dg.DagsterInstance.ephemeral())["success"]
    store = Store(db_uri)
    live_version = store.version("embeddings")
    model_b = Model(
        tiny_settings(db_uri, save_model_b(tmp_path, "other-dimension")).embedder_spec()
    )
    gen = register_configured(store, model_b)
    view = gen.view(store)
    assert view.ref().open().physical("embeddings") == f"embeddings_{gen.gen_id}"
    chunker = TokenChunker(
        model_b.tokenizer,
        CHUNKS["chunk_tokens"],
        CHUNKS["chunk_overlap"],
        TINY_MAX_SEQ,
        tokenizer_id=model_b.tokenizer_id,
    )
    parts = sorted(set(store.scan("documents", ["partition"])["partition"].to_pylist()))
    sync_chunks(view, chunker, parts)
    report, stats = sync_embeddings_on_ray(
        view, model_b.spec, model_b.card, parts, run_key="gen-run", **ray_options(model_b)
    )
    assert stats.commit is not None and stats.commit.committed and report.chunks_embedded > 0
    assert store.version("embeddings") == live_version  # the live generation untouched

    # The local path on a copy without B's vectors: the same rows.
    local_db = str(tmp_path / "local")
    shutil.copytree(db_uri, local_db)
    local = Store(local_db).for_generation(gen.suffix)
    local.drop_table("embeddings")

    def embed(items, sink):
        model_b.embed_stream(items, sink)

    sync_embeddings(local, embed, model_b.card, parts, tokenizer_id=model_b.tokenizer_id)
    ray_rows = {
        r["chunk_id"]: np.asarray(r["vector"])
        for r in view.scan("embeddings", ["chunk_id", "vector"]).to_pylist()
    }
    local_rows = {
        r["chunk_id"]: np.asarray(r["vector"])
        for r in local.scan("embeddings", ["chunk_id", "vector"]).to_pylist()
    }
    assert ray_rows.keys() == local_rows.keys() and len(ray_rows) == view.count("chunks")
    for cid, vector in ray_rows.items():
        assert vector.shape == (48,) and float(vector @ local_rows[cid]) >= 0.9999
