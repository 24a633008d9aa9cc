"""The benchmark's texts: BEIR SciFact documents cut by corpusmill's own chunker.

Read at run time from ../shared/eval/scifact (never copied into the repository); point
`--corpus` at any BEIR-style corpus.jsonl (fields `_id`, `title`, `text`) elsewhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from corpusmill.config import DEFAULT_EVAL_DATA

SCIFACT = Path(DEFAULT_EVAL_DATA) / "corpus.jsonl"


@dataclass(frozen=True)
class BenchTexts:
    name: str
    docs: list[dict]  # the raw records, so the pipeline can ingest the very same documents
    texts: list[str]  # chunk texts, in corpus order
    tokens: list[int]  # tokens per chunk as the model sees them (special tokens included)

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens)


def read_docs(n_docs: int, path: Path = SCIFACT) -> tuple[str, list[dict]]:
    if not path.exists():
        raise SystemExit(f"{path} is missing: pass --corpus PATH to a BEIR corpus.jsonl")
    docs = []
    with path.open() as fh:
        for line in fh:
            if len(docs) >= n_docs:
                break
            docs.append(json.loads(line))
    return f"{path.parent.name} ({len(docs)} docs)", docs


def chunk_docs(
    name: str,
    docs: list[dict],
    tokenizer,
    max_seq_length: int,
    chunk_tokens: int = 200,
    overlap: int = 32,
) -> BenchTexts:
    """Chunk exactly as `chunked_documents` does with the default settings."""
    from corpusmill.chunking import TokenChunker
    from corpusmill.sources import document_body

    chunker = TokenChunker(tokenizer, chunk_tokens, overlap, max_seq_length)
    pairs = [(d["_id"], document_body(d.get("title", ""), d.get("text", ""))) for d in docs]
    chunks = chunker.chunk_documents(pairs).chunks
    return BenchTexts(name, docs, [c.text for c in chunks], [c.n_tokens for c in chunks])
