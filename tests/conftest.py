"""Shared fixtures: tiny real transformer models saved to disk, temporary stores.

The tiny models are built from a config and written with `save_pretrained` (safetensors),
so the real loading code (`TransformerEncoder`) runs in every test that uses them.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from corpusmill.config import prepare_process
from tools.tiny_models import save_tiny_cross_encoder, save_tiny_embedder

prepare_process()  # offline, quiet tokenizers: what every entry point does
warnings.filterwarnings("ignore", message=".*pynvml.*")

# Markers a test gets from where it lives (every test under tests/gpu/) or from what it
# uses (the `browser` fixture: headless Chromium, tests/e2e/test_ui_browser.py, which lives
# beside the e2e fixtures it needs), so `-m "not gpu and not browser"` (make test, CI)
# cannot pick up a GPU or browser test whose author forgot to mark it.
FOLDER_MARKERS = {"gpu": "gpu"}
FIXTURE_MARKERS = {"browser": "browser"}


def pytest_collection_modifyitems(config, items):
    tests_dir = Path(__file__).parent
    for item in items:
        rel = Path(item.path).relative_to(tests_dir)
        markers = {FOLDER_MARKERS.get(rel.parts[0]) if len(rel.parts) > 1 else None}
        markers |= {m for f, m in FIXTURE_MARKERS.items() if f in getattr(item, "fixturenames", ())}
        for marker in markers - {None}:
            item.add_marker(marker)


@pytest.fixture(scope="session", autouse=True)
def _forward_probe_cache(tmp_path_factory):
    """The forward probe's results (corpusmill/model/probe.py) and the kernel shapes runs
    record (kernel_shapes.py) in a folder of this test session, not the user's ~/.cache;
    processes the tests start inherit it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CORPUSMILL_CACHE_DIR", str(tmp_path_factory.mktemp("forward-probe")))
        yield


@pytest.fixture(scope="session")
def tiny_embedder_path(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT bi-encoder with sentence-transformers pooling files."""
    return save_tiny_embedder(tmp_path_factory.mktemp("tiny-embedder"), seed=0)


@pytest.fixture(scope="session")
def tiny_cross_encoder_path(tmp_path_factory) -> Path:
    """A tiny BertForSequenceClassification with one output logit (a cross-encoder)."""
    return save_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-cross-encoder"), seed=1)


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    from corpusmill.model.files import default_model_path

    return default_model_path()


@pytest.fixture
def db_uri(tmp_path) -> str:
    return str(tmp_path / "lancedb")


@pytest.fixture(scope="session")
def local_s3():
    """moto's S3 server on a free 127.0.0.1 port, with one bucket; stopped by PID."""
    pytest.importorskip("moto", reason="the `scale` extra (make install adds it)")
    from tools.local_s3 import LocalS3

    with LocalS3() as s3:
        yield s3


@pytest.fixture
def s3_store(local_s3, tmp_path):
    """A fresh `s3://` store URI and its storage options (one prefix per test)."""
    return local_s3.uri(f"db-{tmp_path.name}"), local_s3.storage_options
