"""Fixtures of the adversarial suite: a second tiny model of the same shape (a model swap
at equal dimension), and one whose weights are poisoned so one token gives NaN."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.user_settings import is_user_setting
from tools.tiny_models import save_tiny_embedder

POISON_WORD = "zebra"  # one whole-word token in the MiniLM vocabulary


@pytest.fixture(scope="session")
def other_tiny_embedder_path(tmp_path_factory) -> Path:
    """Same architecture and dimension as `tiny_embedder_path`, other weights."""
    return save_tiny_embedder(tmp_path_factory.mktemp("other-tiny"), seed=7)


@pytest.fixture(scope="session")
def poisoned_embedder_path(tmp_path_factory) -> Path:
    return save_tiny_embedder(
        tmp_path_factory.mktemp("poisoned-tiny"), seed=0, poison_token=POISON_WORD
    )


def store_snapshot(db_uri: str) -> dict[str, str]:
    """Every file under the store with its content hash: equal snapshots, equal store."""
    root = Path(db_uri)
    return {
        str(p.relative_to(root)): hashlib.blake2b(p.read_bytes(), digest_size=16).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


def cli_env(monkeypatch, db: str, model) -> None:
    """The environment a user of the CLI would set, for `app.cli.main` in-process: only
    these CORPUSMILL_ settings (the tiny model in float32, chunks that fit it), the store at
    `db`, no Dagster instance."""
    import os

    for name in list(os.environ):
        if is_user_setting(name):
            monkeypatch.delenv(name)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    for name, value in {
        "CORPUSMILL_DB": str(db),
        "CORPUSMILL_MODEL": str(model),
        "CORPUSMILL_DTYPE": "float32",
        "CORPUSMILL_CHUNK_TOKENS": "24",
        "CORPUSMILL_CHUNK_OVERLAP": "4",
    }.items():
        monkeypatch.setenv(name, value)
