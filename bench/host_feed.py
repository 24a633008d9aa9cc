"""How fast can the host feed a model? The engine with a forward pass that does no work.

On a GPU the forward pass of a small encoder is cheap, and what bounds the engine is the
host: tokenising, planning and padding batches, moving rows. This measures that bound on
any machine, with no GPU: the real tokenizer and engine, the model replaced by a no-op
(labelled below; it computes nothing), fed either texts or the ids the chunker stores
(`TokenIds`). If the host cannot feed more tokens/s than the GPU's forward-only rate, the
GPU waits, whatever the batch size.

    .venv/bin/python bench/host_feed.py --docs 2000   # prints one JSON line last
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus_texts import SCIFACT, read_docs  # noqa: E402


class NoOpForward:
    """NOT A MODEL: the real encoder's tokenizer with a forward pass that returns zeros."""

    def __init__(self, encoder) -> None:
        self.encoder = encoder
        self.pad_id = encoder.pad_id
        self.uses_token_type_ids = encoder.uses_token_type_ids

    def tokenize(self, texts):
        return self.encoder.tokenize(texts)

    def forward(self, batch):
        return np.zeros((batch["input_ids"].shape[0], 1), dtype=np.float32)


def main() -> int:
    from corpusmill.chunking import TokenChunker
    from corpusmill.engine.encoder import TransformerEncoder, default_model_path
    from corpusmill.engine.runner import BatchEngine, TokenIds
    from corpusmill.sources import document_body

    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--corpus", default=str(SCIFACT))
    ap.add_argument("--model", default="", help="a local model folder (default: MiniLM-L6)")
    ap.add_argument("--max-batch-tokens", type=int, default=32768, help="the CUDA default")
    args = ap.parse_args()

    enc = TransformerEncoder(args.model or default_model_path(), device="cpu", dtype="float32")
    name, docs = read_docs(args.docs, Path(args.corpus))

    chunker = TokenChunker(enc.tokenizer, 200, 32, enc.max_seq_length, enc.tokenizer_id)
    pairs = [(d["_id"], document_body(d.get("title", ""), d.get("text", ""))) for d in docs]
    chunks = chunker.chunk_documents(pairs).chunks
    tokens = sum(c.n_tokens for c in chunks)
    inputs = {
        "texts": [c.text for c in chunks],
        "stored_ids": [TokenIds(c.input_ids) if c.input_ids else c.text for c in chunks],
    }
    out: dict = {
        "corpus": name,
        "chunks": len(chunks),
        "tokens": tokens,
        "cpu_count": os.cpu_count(),
        "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "unset"),
    }
    for threads in sorted({1, min(8, os.cpu_count() or 1)}):
        engine = BatchEngine(
            NoOpForward(enc), max_batch_tokens=args.max_batch_tokens, tokenize_threads=threads
        )
        engine.encode(inputs["texts"][:64])
        for kind, items in inputs.items():
            rates = []
            for _ in range(args.rounds):
                _, stats = engine.encode(items)
                rates.append(tokens / stats.wall_seconds)
            key = f"{kind}_{threads}_thread{'s' if threads > 1 else ''}_tokens_per_s"
            out[key] = round(statistics.median(rates))
            print(f"{key:40s} {out[key]:>12,}", flush=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
