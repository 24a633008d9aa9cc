"""The generations registry (a real LanceDB directory, no model): ids follow the card, the
first generation takes the plain names and is live at once, a later one gets its own
tables, and a switch is one commit: readers racing a stream of switches always see exactly
one live generation, and its row agrees with the pointer."""

from __future__ import annotations

import threading

import pytest

from corpusmill.errors import UsageError
from corpusmill.model.card import ModelCard, generation_id
from corpusmill.store import Store
from corpusmill.store.generations import (
    LIVE_STATE,
    RegistryCache,
    read_registry,
    register,
    switch,
)


def card(name: str, dimension: int = 4) -> ModelCard:
    return ModelCard(name, f"rev-{name}", dimension, "mean", True, 16)


def test_ids_follow_the_vector_space_and_the_first_generation_takes_the_plain_names(db_uri):
    assert generation_id(card("a")) == generation_id(card("a"))
    assert generation_id(card("a")) != generation_id(card("a", 8))
    store = Store(db_uri)
    _reg, a = register(store, card("a"), model_path="/m/a")
    registry, b = register(store, card("b"), model_path="/m/b")
    assert registry.live == a.gen_id and registry.previous is None
    assert a.tables()["embeddings"] == "embeddings" and a.suffix == ""
    assert b.tables() == {n: f"{n}_{b.gen_id}" for n in ("chunks", "embeddings", "rerank_scores")}
    assert b.view(store).physical("documents") == "documents"  # shared by every generation
    assert b.view(store).stage("embed") == f"embed:{b.gen_id}"
    again, same = register(store, card("b"), model_path="/elsewhere/b")
    assert same.gen_id == b.gen_id and same.model_path == "/elsewhere/b"  # found again
    assert sorted(again.generations) == sorted([a.gen_id, b.gen_id])
    with pytest.raises(UsageError, match="generations list"):
        again.get("g-nope")


def test_readers_racing_switches_always_see_exactly_one_live_generation(db_uri):
    store = Store(db_uri)
    _r, a = register(store, card("a"), model_path=None)
    _r, b = register(store, card("b"), model_path=None)
    flips = 12
    done = threading.Event()
    seen: list[tuple[str | None, tuple[str, ...]]] = []
    errors: list[BaseException] = []

    def flipper() -> None:
        try:
            for i in range(flips):
                target = b.gen_id if i % 2 == 0 else a.gen_id
                with store.write_lock():
                    switch(store, read_registry(store), target, note="test")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            done.set()

    def reader(cache: RegistryCache | None) -> None:
        try:
            while not done.is_set():
                registry = cache.read(Store(db_uri)) if cache else read_registry(Store(db_uri))
                live_rows = tuple(
                    g for g, gen in registry.generations.items() if gen.state == LIVE_STATE
                )
                seen.append((registry.live, live_rows))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=flipper)] + [
        threading.Thread(target=reader, args=(c,)) for c in (None, RegistryCache())
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    lives = {live for live, _rows in seen}
    assert lives == {a.gen_id, b.gen_id}  # both sides of the switches were seen
    for live, rows in seen:
        assert rows == (live,), "the pointer and the generations' states disagree"
    final = read_registry(store)
    assert final.live == a.gen_id and final.previous == b.gen_id
