"""Exactly once under SIGKILL during a build, a promotion and a rollback: a child process
is killed right after each chosen commit (its store reports the commit and waits, so the
kill lands at that instant), then the work is run again. Every shard's chunks and vectors
are then in each generation exactly once, as a clean run leaves them, and exactly one
generation is live: the old or the new one at each kill, the new one after the rerun."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal

import pytest

from corpusmill.lifecycle.operations import describe, promote, rollback
from corpusmill.model import Model
from corpusmill.model.pool import ModelPool
from corpusmill.store import Store
from tests.assets.corpora import write_corpus
from tests.e2e import generation_faults
from tests.generations import live_of, rows_of, save_model_b
from tests.runs import ingest, tiny_settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ctx():
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(["tests.e2e.generation_faults", "app.runs", "torch"])
    return context


def kill_after(ctx, target, args, nth: int | None, table_suffix: str = "") -> list[str]:
    """Run `target(conn, *args)` in a child; SIGKILL it right after its `nth` commit of a
    table ending in `table_suffix` (None: let it finish). The commits it reported."""
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(child, *args))
    proc.start()
    seen: list[str] = []
    try:
        while True:
            assert parent.poll(300), "the child went quiet"
            message = parent.recv()
            if message.startswith("done"):
                break
            seen.append(message)
            matching = sum(1 for t in seen if t.endswith(table_suffix))
            if nth is not None and message.endswith(table_suffix) and matching == nth:
                os.kill(proc.pid, signal.SIGKILL)
                break
            parent.send("go")
    finally:
        proc.join(120)
    if nth is not None:
        assert proc.exitcode == -signal.SIGKILL
    return seen


def one_live(db: str) -> str:
    states = [g["state"] for g in describe(Store(db))]
    assert states.count("live") == 1, states
    return live_of(db)


@pytest.fixture
def built(tmp_path, tiny_embedder_path):
    """A store with A live, and a copy where B was built cleanly (the reference)."""
    model_b = save_model_b(tmp_path, "other-dimension")
    corpus = write_corpus(tmp_path / "corpus", n_docs=8, min_sentences=4)
    base = str(tmp_path / "base")
    assert ingest([corpus], tiny_settings(base, tiny_embedder_path))["success"]
    clean = str(tmp_path / "clean")
    shutil.copytree(base, clean)
    summary = ingest([corpus], tiny_settings(clean, model_b, promote="manual"))
    return {
        "corpus": str(corpus),
        "base": base,
        "clean": clean,
        "a": live_of(base),
        "b": summary["generation"],
        "model_b": str(model_b),
    }


def test_sigkill_during_a_build_then_rerun(ctx, tmp_path, built):
    """Killed after its first commit (chunks), its first vectors, and a later one."""
    b, a = built["b"], built["a"]
    probe = str(tmp_path / "probe")
    shutil.copytree(built["base"], probe)
    args = (built["corpus"], probe, built["model_b"], 2)
    commits = [t for t in kill_after(ctx, generation_faults.build, args, None) if t.endswith(b)]
    first_vectors = commits.index(f"embeddings_{b}") + 1
    assert 1 < first_vectors < len(commits) - 1
    for nth in (1, first_vectors, len(commits) - 1):
        db = str(tmp_path / f"build{nth}")
        shutil.copytree(built["base"], db)
        args = (built["corpus"], db, built["model_b"], 2)
        kill_after(ctx, generation_faults.build, args, nth, table_suffix=b)
        assert one_live(db) == a
        assert rows_of(db, b) != rows_of(built["clean"], b)  # killed half-way
        rerun = ingest([built["corpus"]], tiny_settings(db, built["model_b"], promote="manual"))
        assert rerun["success"] and one_live(db) == a
        for gen in (a, b):
            assert rows_of(db, gen) == rows_of(built["clean"], gen)
            assert rows_of(db, gen, "chunks") == rows_of(built["clean"], gen, "chunks")


def test_sigkill_during_a_promotion_and_a_rollback_leaves_exactly_one_live(ctx, tmp_path, built):
    b, a = built["b"], built["a"]
    probe = str(tmp_path / "probe")
    shutil.copytree(built["clean"], probe)
    commits = kill_after(
        ctx, generation_faults.switch, (probe, built["model_b"], "promote", b), None
    )
    assert commits == ["generations", "generations"]  # the checks' record, then the switch
    pool = ModelPool(Model(tiny_settings(probe, built["model_b"]).embedder_spec()))
    for nth, live_after_kill in ((1, a), (2, b)):
        db = str(tmp_path / f"promote{nth}")
        shutil.copytree(built["clean"], db)
        kill_after(ctx, generation_faults.switch, (db, built["model_b"], "promote", b), nth)
        assert one_live(db) == live_after_kill
        outcome = promote(Store(db), b, pool)
        assert outcome.done == (live_after_kill == a) and one_live(db) == b
        for gen in (a, b):
            assert rows_of(db, gen) == rows_of(built["clean"], gen)

        # Then a rollback, killed right after its one commit: A live, and a rerun (which
        # finds B to be the previous generation now) returns to B, exactly one live.
        kill_after(ctx, generation_faults.switch, (db, built["model_b"], "rollback", ""), 1)
        assert one_live(db) == a
        assert rollback(Store(db)).done and one_live(db) == b
        for gen in (a, b):
            assert rows_of(db, gen) == rows_of(built["clean"], gen)
