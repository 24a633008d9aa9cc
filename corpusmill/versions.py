"""What each asset's output depends on, as one string per asset: its code version.

Dagster marks an asset stale when its code version differs from the one its latest
materialisation recorded. The bodies of these assets rarely change; what changes their
output is configuration: the embedding model (its id and weights revision), the chunker
(algorithm version, size, overlap) and the reranker. So those go into the versions, and a
model or chunker change shows every affected asset as stale in the UI.
"""

from __future__ import annotations

from corpusmill.model.card import ModelCard

# Bump an asset's entry when its own logic changes what it writes.
LOGIC = {
    "raw_corpus": "1",
    "chunked_documents": "1",
    "embeddings": "1",
    "rerank_scores": "1",
    "retrieval_quality": "1",
}


def model_version(card: ModelCard | None) -> str:
    return "none" if card is None else f"{card.model_id}@{card.revision}"


def code_versions(
    embedder: ModelCard | None, chunker: str, reranker: ModelCard | None = None
) -> dict[str, str]:
    """asset name -> code version. `chunker` is `chunking.chunker_version(...)`; an unknown
    model (its folder unreadable when the definitions load) is `None`."""
    emb, rr = model_version(embedder), model_version(reranker)
    return {
        "raw_corpus": f"v{LOGIC['raw_corpus']}",
        # Chunks are cut with the embedder's tokenizer: a model change re-chunks.
        "chunked_documents": f"v{LOGIC['chunked_documents']};chunker={chunker};tokenizer={emb}",
        "embeddings": f"v{LOGIC['embeddings']};model={emb};chunker={chunker}",
        "rerank_scores": f"v{LOGIC['rerank_scores']};model={emb};reranker={rr}",
        "retrieval_quality": f"v{LOGIC['retrieval_quality']};model={emb};chunker={chunker}",
    }
