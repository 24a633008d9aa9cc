"""What a store records about the model that wrote it: the table's lineage."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class PoolingSpec:
    """How token states become one vector, as the model's sentence-transformers files say."""

    mode: str  # mean | cls | max | lasttoken | none (a cross-encoder: no pooling)
    normalize: bool


@dataclass(frozen=True)
class ModelCard:
    """The identity of a model's vectors: two models with equal cards write the same space."""

    model_id: str
    revision: str  # sha256 prefix of the weights: a local path has no hub revision
    dimension: int
    pooling: str
    normalize: bool
    max_seq_length: int

    def as_metadata(self) -> dict[str, str]:
        return {
            "model_id": self.model_id,
            "revision": self.revision,
            "dimension": str(self.dimension),
            "pooling": self.pooling,
            "normalize": str(self.normalize).lower(),
        }
