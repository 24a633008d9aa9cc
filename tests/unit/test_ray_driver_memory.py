"""The Ray driver's memory does not grow with the run: it plans and dispatches a slice of
documents at a time, with a bounded number of work units out, and commits each slice.

The Ray path (`sync_embeddings_on_ray`) over synthetic chunks with STAND-IN workers
(bench/stand_in.py: the real worker with its model replaced by a device that returns
unit rows at once) run in this process one unit at a time (`tests.embed_paths.in_process`,
what the actor pool does minus Ray). The Python heap's peak over the whole run (planning,
dispatch, the workers' reads and fragment writes, the commits) is measured with
tracemalloc at 10k and at 100k chunks: with a planner that holds the whole run (what the
driver did before slices: ~540 bytes per chunk) the second is several times the first.
"""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from bench.stand_in import CARD, TOKENIZER, fill_chunks, stand_in
from corpusmill.ids import ALL_PARTITIONS
from corpusmill.model import ModelSpec
from corpusmill.store import Store
from tests.embed_paths import in_process

pytest.importorskip("lance")

SLICE = 10_000  # chunks per slice: the small run is one slice, the large one ten
BOUND = 24 * 2**20  # bytes: the peak allowed at any chunk count with this slice size


def _peak(path: str, chunks: int) -> int:
    from corpusmill.scale.ray_embed import sync_embeddings_on_ray

    store = Store(path)
    fill_chunks(store, chunks)
    gc.collect()
    tracemalloc.start()
    try:
        report, stats = sync_embeddings_on_ray(
            store,
            ModelSpec(),
            CARD,
            ALL_PARTITIONS,
            run_key=f"memory-{chunks}",
            workers=4,
            tokenizer_id=TOKENIZER,
            slice_chunks=SLICE,
            worker=stand_in(0),
            map_units=in_process,
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The run did the whole job: every chunk once, committed.
    assert report.chunks_embedded == chunks == store.count("embeddings")
    assert stats.commit is not None and stats.commit.committed
    return peak


def test_driver_memory_stays_flat_from_10k_to_100k_chunks(tmp_path):
    small = _peak(str(tmp_path / "small"), 10_000)
    large = _peak(str(tmp_path / "large"), 100_000)
    assert large <= BOUND, f"peak {large / 2**20:.1f} MiB at 100k chunks"
    assert large <= 1.25 * small, f"{small / 2**20:.1f} MiB at 10k, {large / 2**20:.1f} at 100k"


def test_each_slice_is_planned_from_the_version_the_run_began_from(tmp_path):
    """The driver's native growth on a real cluster (BENCHMARKS.md, driver memory): planning
    slice k read `embeddings` at its latest version, so it opened (and Lance cached the
    metadata of) every fragment the k-1 earlier slice commits had added. Each slice's
    documents are untouched by the other slices' commits, so every slice is planned from
    the version the run began from: the same plan, read from a table that does not grow."""
    from corpusmill.scale.ray_embed import sync_embeddings_on_ray

    planned_at: list[int] = []

    class Spy(Store):
        def scan(self, name, columns, where=None):
            if name == "embeddings":  # the plan's read of what is stored (`Changes.against`)
                planned_at.append(self.open(name).version)
            return super().scan(name, columns, where)

    store = Spy(str(tmp_path / "db"))
    fill_chunks(store, 3_000)
    began = int(store.ensure_embeddings(CARD).version)
    report, stats = sync_embeddings_on_ray(
        store,
        ModelSpec(),
        CARD,
        ALL_PARTITIONS,
        run_key="pinned",
        workers=2,
        tokenizer_id=TOKENIZER,
        slice_chunks=1_000,
        worker=stand_in(0),
        map_units=in_process,
    )
    assert stats.slices == stats.commits == 3
    assert report.chunks_embedded == report.rows == store.count("embeddings") == 3_000
    assert planned_at == [began] * 3, planned_at
