"""Attention for small heads on a CPU, plugged into transformers' attention interface.

Why: on a CPU, torch's SDPA runs its flash-attention kernel, which cuts the work into
blocks sized for large heads. At MiniLM's head size 32 it reaches under a quarter of the
matmul rate, and the profiler puts it at ~25% of a bf16 forward for ~7% of the FLOPs
(docs/BENCHMARKS.md, `bench/attention_probe.py`).

What instead: the textbook product, Q K^T, softmax, then P V, done a few sequences at a
time so the scores stay in cache, and done per group of sequences up to the group's
longest key, so padded keys are mostly skipped rather than masked. The scores are
computed and soft-maxed in float32 (a bf16 Q K^T would round them before the softmax,
which costs precision the engine promises); only the probabilities are rounded for
the P V product, as SDPA's own bf16 kernel does.

Where it applies: CPU, inference, bidirectional attention over a right-padded batch (what
`runner.collate` builds). Anything else (a GPU, a causal or left-padded mask, dropout)
goes to SDPA unchanged, so registering it can only change speed, never the meaning.
"""

from __future__ import annotations

NAME = "corpusmill_cpu"

# Scores of one group (sequences x heads x keys x keys x 4 bytes) are kept under this
# size so they stay in the core's L2 cache between the three passes over them.
GROUP_SCORE_BYTES = 1 << 20


def key_lengths(mask, batch: int, length: int) -> list[int] | None:
    """Per-sequence count of real tokens, or None when the mask is not a right-padded,
    bidirectional padding mask (then the caller falls back to SDPA).

    `mask` is what transformers' SDPA mask builder returns: None (no padding), or a
    boolean (True = attend) or additive float tensor of shape (batch, 1, queries, keys).
    """
    import torch

    if mask is None:
        return [length] * batch
    if mask.dim() != 4 or mask.shape[0] != batch or mask.shape[-1] != length:
        return None
    keep = mask if mask.dtype == torch.bool else mask == 0
    if keep.shape[2] > 1 and not bool((keep == keep[:, :, :1, :]).all()):
        return None  # differs per query: causal or custom, not padding
    row = keep[:, 0, 0, :]
    counts = row.sum(-1)
    if not bool((row == (torch.arange(length, device=row.device) < counts[:, None])).all()):
        return None  # not right padding
    return counts.tolist()


def groups(lengths: list[int], heads: int, budget: int | None = None):
    """Consecutive runs of sequences [start, stop) with their longest key length, each
    run's float32 scores within `budget` bytes (a run is at least one sequence)."""
    budget = GROUP_SCORE_BYTES if budget is None else budget
    start = 0
    while start < len(lengths):
        longest = lengths[start]
        stop = start + 1
        while stop < len(lengths):
            widest = max(longest, lengths[stop])
            if (stop + 1 - start) * heads * widest * widest * 4 > budget:
                break
            longest = widest
            stop += 1
        yield start, stop, longest
        start = stop


def small_head_attention(
    module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs
):
    """transformers attention-interface function: (b, h, L, d) in, (b, L, h, d) out."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, length, head_dim = query.shape
    lengths = None
    if (
        query.device.type == "cpu"
        and not getattr(module, "training", False)
        and not dropout
        and key.shape[2] == length
    ):
        lengths = key_lengths(attention_mask, batch, length)
    if lengths is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    scale = head_dim**-0.5 if scaling is None else scaling
    # Written as (b, h, L, d) and returned transposed, as SDPA's wrapper does. A padded
    # query position holds zeros, or attention over its sequence's real keys when a
    # longer sequence shares its group: pooling and later layers ignore it either way.
    out = query.new_zeros(batch, heads, length, head_dim)
    for start, stop, n in groups(lengths, heads):
        if stop - start == 1:  # one sequence: 3-d strided views, no gathering copies
            q, k, v, o = query[start, :, :n], key[start, :, :n], value[start, :, :n], out[start]
        else:
            q, k, v = (t[start:stop, :, :n].reshape(-1, n, head_dim) for t in (query, key, value))
            o = out[start:stop].view(-1, length, head_dim)
        # copy=True: a float32 query must not be scaled in place under its caller.
        scaled = q.to(torch.float32, copy=True).mul_(scale)
        scores = torch.bmm(scaled, k.float().transpose(-1, -2))
        for i in range(start, stop):
            if lengths[i] < n:  # a shorter sequence in the group: mask its padded keys
                rows = scores.view(stop - start, heads, n, n)[i - start]
                rows[:, :, lengths[i] :] = float("-inf")
        torch.softmax(scores, dim=-1, out=scores)
        o[:, :n] = torch.bmm(scores.to(value.dtype), v)
    out = out.transpose(1, 2)
    return out, None


def register() -> str:
    """Make NAME a valid `attn_implementation` (idempotent); returns NAME."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(NAME, small_head_attention)
    # A new name gets no mask builder of its own: build the padding mask as for SDPA.
    AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    return NAME
