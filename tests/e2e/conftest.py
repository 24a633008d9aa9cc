"""Fixtures for tests that drive corpusmill as separate processes."""

import os

import pytest

from tests.e2e.procs import with_checkout


@pytest.fixture
def cli_env(tmp_path, tiny_embedder_path):
    """Environment for a `corpusmill` subprocess: temp store and instance, tiny model."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    return with_checkout(
        {
            **os.environ,
            "CORPUSMILL_DB": str(tmp_path / "db"),
            "CORPUSMILL_MODEL": str(tiny_embedder_path),
            "CORPUSMILL_DTYPE": "float32",
            "CORPUSMILL_CHUNK_TOKENS": "40",
            "CORPUSMILL_CHUNK_OVERLAP": "8",
            "DAGSTER_HOME": str(home),
        }
    )
