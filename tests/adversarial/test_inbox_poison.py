"""One poison input never stalls the inbox (issue 27, item 1). The fault is injected
(labelled): chunking raises on a document holding `POISON`, standing for any input that
takes its whole run down (a worker killed for memory, a bug in a step), which no reader can
quarantine because the run dies. The sensor, the runs (Dagster's public testing API, as
tests/assets/test_sensor_inbox.py) and the store are real."""

from __future__ import annotations

import json

import pytest

from corpusmill.chunking import TokenChunker
from corpusmill.inbox import INBOX_ATTEMPTS
from corpusmill.store import Store
from tests.assets.test_sensor_inbox import _doc, make_env


@pytest.fixture
def env(tmp_path, db_uri, tiny_embedder_path, monkeypatch):
    real = TokenChunker.batches

    def batches(self, docs, progress=None):
        docs = list(docs)
        if any("POISON" in body for _doc_id, body in docs):
            raise MemoryError("injected: the run dies on this input")
        return real(self, docs, progress)

    monkeypatch.setattr(TokenChunker, "batches", batches)
    return make_env(tmp_path, db_uri, tiny_embedder_path)


def changes(request) -> dict:
    return json.loads(request.tags["corpusmill/changes"])


def set_aside(request) -> dict[str, str]:
    config = request.run_config["ops"]["raw_corpus"]["config"]
    return {a["doc_id"]: a["reason"] for a in config["set_aside"]}


def test_a_good_file_dropped_after_a_poison_one_is_ingested(env):
    poison, good = _doc("poison.txt"), _doc("good.txt")
    (env.inbox / "poison.txt").write_text("a POISON pill that takes every run down")
    request, _ = env.tick()
    assert not env.execute(request, raise_on_error=False).success

    (env.inbox / "good.txt").write_text("a good file about gardens, dropped after it")
    request, _ = env.tick()
    assert changes(request) == {"new": 1} and set_aside(request) == {poison: ""}
    assert env.execute(request).success
    assert set(env.embedded_docs()) == {good}

    # The suspect, alone, until it has failed INBOX_ATTEMPTS runs; then it is set aside.
    for _ in range(INBOX_ATTEMPTS - 1):
        request, _ = env.tick()
        # Pending: its first run committed its document row before dying.
        assert changes(request) == {"pending": 1} and set_aside(request) == {}
        assert not env.execute(request, raise_on_error=False).success
    request, _ = env.tick()
    assert changes(request) == {"quarantined": 1}
    assert f"set aside: {INBOX_ATTEMPTS} ingest runs failed" in set_aside(request)[poison]
    assert env.execute(request).success
    rows = Store(env.db).scan("quarantine", ["doc_id", "stage", "reason"]).to_pylist()
    assert [(r["doc_id"], r["stage"]) for r in rows] == [(poison, "source")]
    assert "MemoryError" in rows[0]["reason"] and "change or replace the file" in rows[0]["reason"]
    assert set(env.stored_docs()) == {good} and set(env.embedded_docs()) == {good}
    request, skip = env.tick()
    assert request is None and "1 set aside" in skip

    # Another good file goes straight in; the poison stays aside.
    (env.inbox / "late.txt").write_text("a later file about ponds")
    request, _ = env.tick()
    assert changes(request) == {"new": 1} and poison in set_aside(request)
    assert env.execute(request).success
    assert set(env.embedded_docs()) == {good, _doc("late.txt")}

    # Fixed, it is tried again and goes in; its quarantine row leaves.
    (env.inbox / "poison.txt").write_text("a harmless pill now")
    request, _ = env.tick()
    assert changes(request) == {"new": 1, "cleared": 1} and set_aside(request) == {}
    assert env.execute(request).success
    assert poison in env.embedded_docs() and Store(env.db).count("quarantine") == 0
    assert env.tick()[0] is None
