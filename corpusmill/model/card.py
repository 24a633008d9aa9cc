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


def generation_id(card: ModelCard) -> str:
    """The id of the generation this model's vectors make up in a store: a digest of the
    fields that define the vector space (`as_metadata`), so the same model configured
    again finds its generation, and any other model (even at the same dimension) starts
    its own."""
    import hashlib
    import json

    digest = hashlib.blake2b(
        json.dumps(card.as_metadata(), sort_keys=True).encode(), digest_size=5
    ).hexdigest()
    return f"g{digest}"
