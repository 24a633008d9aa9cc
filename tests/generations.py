"""Helpers of the generation tests: a second and a wider tiny model, what a generation holds,
and the state every test compares (each chunk once, exactly one live generation)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from corpusmill.store import Store
from corpusmill.store.generations import read_registry
from tools.tiny_models import save_tiny_embedder

# (width, seed) of the model B a store migrates to: the same dimension as the tiny model
# A (32) with other weights, and another dimension.
OTHER_MODELS = {"same-dimension": (32, 7), "other-dimension": (48, 5)}


def save_model_b(root: Path, kind: str) -> Path:
    width, seed = OTHER_MODELS[kind]
    return save_tiny_embedder(root / f"model-b-{kind}", seed=seed, width=width)


def rows_of(db: str, gen_id: str, table: str = "embeddings") -> list[tuple[str, str]]:
    """(chunk_id, content_hash) of a generation's table, sorted; asserts each id once."""
    store = Store(db)
    view = read_registry(store).get(gen_id).view(store)
    rows = view.scan(table, ["chunk_id", "content_hash"]).to_pylist()
    ids = Counter(r["chunk_id"] for r in rows)
    assert max(ids.values(), default=1) == 1, f"a chunk twice in {gen_id}'s {table}"
    return sorted((r["chunk_id"], r["content_hash"]) for r in rows)


def live_of(db: str) -> str:
    """The one live generation (the pointer is one field: there is exactly one or none)."""
    live = read_registry(Store(db)).live
    assert live is not None, "no live generation"
    return live


def table_versions(db: str, names) -> dict[str, int]:
    store = Store(db)
    return {n: store.version(n) for n in names}
