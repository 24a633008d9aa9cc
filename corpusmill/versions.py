"""What each asset's output depends on, as one string per asset: its code version.

Dagster marks an asset stale when its code version differs from the one its latest
materialisation recorded. The bodies of these assets rarely change; what changes their
output is configuration: the embedding model (its id and weights revision), the chunker
(algorithm version, size, overlap) and the reranker. So those go into the versions, and a
model or chunker change shows every affected asset as stale in the UI. The model-bound
assets also name the generation the model writes (`model.card.generation_id`), so after a
model change the stale assets say which generation a materialisation will build.
"""

from __future__ import annotations

from corpusmill.model.card import ModelCard, generation_id

# Bump an asset's entry when its own logic changes what it writes.
LOGIC = {
    "raw_corpus": "1",
    "chunked_documents": "1",
    "embeddings": "1",
    "rerank_scores": "1",
    "retrieval_quality": "1",
    "live_generation": "1",
}


def model_version(card: ModelCard | None) -> str:
    """The model's id and weights fingerprint, and the generation it writes."""
    if card is None:
        return "none"
    return f"{card.model_id}@{card.revision};generation={generation_id(card)}"


def code_versions(
    embedder: ModelCard | None, chunker: str, reranker: ModelCard | None = None
) -> dict[str, str]:
    """asset name -> code version. `chunker` is `chunking.chunker_version(...)`; an unknown
    model (its folder unreadable when the definitions load) is `None`."""
    emb = model_version(embedder)
    rr = "none" if reranker is None else f"{reranker.model_id}@{reranker.revision}"
    return {
        "raw_corpus": f"v{LOGIC['raw_corpus']}",
        # Chunks are cut with the embedder's tokenizer: a model change re-chunks.
        "chunked_documents": f"v{LOGIC['chunked_documents']};chunker={chunker};tokenizer={emb}",
        "embeddings": f"v{LOGIC['embeddings']};model={emb};chunker={chunker}",
        "rerank_scores": f"v{LOGIC['rerank_scores']};model={emb};reranker={rr}",
        "retrieval_quality": f"v{LOGIC['retrieval_quality']};model={emb};chunker={chunker}",
        "live_generation": f"v{LOGIC['live_generation']};model={emb}",
    }
