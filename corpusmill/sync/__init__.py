"""The sync steps behind the assets: sources -> documents -> chunks -> embeddings
-> rerank_scores.

Each step makes its table mirror the one upstream for a set of partitions, touching only
what differs: a document whose content hash is unchanged is not re-chunked, a chunk whose
content hash is already stored is not re-embedded. Each step is idempotent, so a rerun
after a crash finishes the job and a rerun with nothing changed writes nothing.
No Dagster here: the assets call these functions and report what they return.
"""

from corpusmill.sync.chunks import ChunksReport, sync_chunks
from corpusmill.sync.documents import DocumentsReport, record_quarantine, sync_documents
from corpusmill.sync.embed_step import EmbeddingsReport
from corpusmill.sync.embeddings import sync_embeddings
from corpusmill.sync.rerank_scores import RerankReport, sync_rerank_scores

__all__ = [
    "ChunksReport",
    "DocumentsReport",
    "EmbeddingsReport",
    "RerankReport",
    "record_quarantine",
    "sync_chunks",
    "sync_documents",
    "sync_embeddings",
    "sync_rerank_scores",
]
