"""Every precision the engine can pick agrees with float32 on a real corpus.

The corpus is BEIR SciFact (../shared/eval/scifact) chunked by corpusmill's own chunker,
or the Python docs that ship with CPython where SciFact is absent; the model is the real
packaged all-MiniLM-L6-v2. Threshold: cosine >= 0.9999 for every single vector.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from corpusmill.engine.runner import BatchEngine
from corpusmill.model import packed_linear
from corpusmill.model.encoder import TransformerEncoder
from corpusmill.model.hardware import cpu_supports_bf16

# The real MiniLM over a real corpus: seconds per precision, not the inner loop.
pytestmark = pytest.mark.slow

SCIFACT = Path(__file__).resolve().parents[3] / "shared" / "eval" / "scifact" / "corpus.jsonl"
N_DOCS = 25


def corpus_texts(tokenizer, max_seq_length) -> list[str]:
    from corpusmill.chunking import TokenChunker
    from corpusmill.sources import document_body

    docs: list[tuple[str, str]] = []
    if SCIFACT.exists():
        with SCIFACT.open() as fh:
            for line in fh:
                rec = json.loads(line)
                docs.append((rec["_id"], document_body(rec.get("title", ""), rec["text"])))
                if len(docs) == N_DOCS:
                    break
    else:
        from corpusmill.sources import read_pydoc

        for doc in read_pydoc(lambda _id: True):
            docs.append((doc.doc_id, doc.body))
            if len(docs) == N_DOCS:
                break
    chunker = TokenChunker(tokenizer, 200, 32, max_seq_length)
    return [c.text for c in chunker.chunk_documents(docs).chunks]


@pytest.fixture(scope="module")
def reference(minilm_path):
    enc = TransformerEncoder(minilm_path, dtype="float32", forward="transformers")
    texts = corpus_texts(enc.tokenizer, enc.max_seq_length)
    rows, _ = BatchEngine(enc, max_batch_tokens=4096).encode(texts)
    return texts, rows


PRECISIONS = [
    pytest.param(
        "bfloat16", marks=pytest.mark.skipif(not cpu_supports_bf16(), reason="no native bf16")
    ),
    "auto",
]


@pytest.mark.parametrize("dtype", PRECISIONS)
def test_precision_matches_float32_per_vector(minilm_path, reference, dtype):
    texts, fp32 = reference
    assert len(texts) >= 40
    enc = TransformerEncoder(minilm_path, dtype=dtype)
    rows, stats = BatchEngine(enc, max_batch_tokens=4096).encode(texts)
    cosines = (rows * fp32).sum(axis=1)  # both L2-normalised
    assert not stats.failed
    assert cosines.min() >= 0.9999, f"{dtype}: worst vector {cosines.min():.6f} ({enc.dtype_name})"
    # and the precision really differs, so the test could fail: not float32 in disguise
    if enc.dtype_name != "float32":
        assert not np.array_equal(rows, fp32)
    # on a CPU this is the engine's default path: Linear layers on oneDNN-packed weights
    # (bert_cpu packs its own in every dtype; Transformers' forward in bf16/fp16 only, its
    # float32 forward being the reference on F.linear)
    if enc.device == "cpu" and packed_linear.supported(enc.torch_dtype):
        packs = enc.forward_path == "bert_cpu" or enc.dtype_name != "float32"
        assert enc.linear_kernel == ("onednn_packed" if packs else "aten")
