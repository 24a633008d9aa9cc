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


def pool_packed(hidden, lengths, spec: PoolingSpec):
    """`pool` for packed rows: `hidden` (tokens, width) holds the sequences end to end,
    `lengths` (sequences,) their lengths (engine/inputs.py, `collate_packed`)."""
    import torch

    hidden = hidden.float()
    ends = torch.cumsum(lengths, 0)
    if spec.mode == "cls":
        pooled = hidden[ends - lengths]
    elif spec.mode == "lasttoken":
        pooled = hidden[ends - 1]
    elif spec.mode == "max":
        pooled = torch.segment_reduce(hidden, "max", lengths=lengths)
    else:
        sums = torch.segment_reduce(hidden, "sum", lengths=lengths)
        pooled = sums / lengths.to(hidden.dtype).clamp(min=1)[:, None]
    if spec.normalize:
        pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
    return pooled
