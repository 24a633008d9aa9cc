"""Pooling: token states -> one vector per input, as sentence-transformers pools."""

from __future__ import annotations

from corpusmill.model.card import PoolingSpec


def pool(hidden, attention_mask, spec: PoolingSpec):
    """Sentence-transformers' pooling, computed in float32."""
    import torch

    hidden = hidden.float()
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if spec.mode == "cls":
        pooled = hidden[:, 0]
    elif spec.mode == "max":
        pooled = hidden.masked_fill(mask == 0, -1e9).max(dim=1).values
    elif spec.mode == "lasttoken":
        last = attention_mask.sum(dim=1) - 1
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    else:
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    if spec.normalize:
        pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
    return pooled
