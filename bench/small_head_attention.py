"""Attention for small heads on a CPU, plugged into transformers' attention interface.

TRIED, NOT KEPT (2026-11-28, docs/BENCHMARKS.md): alone it beats SDPA's flash kernel
(`attention_probe.py`: 12.3 against 15.1 ms per layer in bf16), but the whole model runs
at 0.85-0.89x of the SDPA engine in `forward_variants.py`, so the engine keeps SDPA and
this file stays here, where those two scripts measure it.

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
goes to SDPA unchanged. Checked against SDPA on right-padded batches (bf16 and float32,
sequences alone and grouped) while it sat in the engine, commit "engine: CPU attention
for small heads".
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
    spans = list(groups(lengths, heads))
    # One set of work buffers per call, sized for the largest group and reused by every
    # group: scores of ~1-2 MB allocated per group would each be a fresh mmap and ~500
    # page faults (glibc), which costs as much as the product itself.
    rows = max((stop - start) * heads for start, stop, _ in spans)
    longest = max(n for _, _, n in spans)
    q32 = query.new_empty(rows * longest * head_dim, dtype=torch.float32)
    k32 = torch.empty_like(q32)
    s32 = query.new_empty(rows * longest * longest, dtype=torch.float32)
    probs = s32 if value.dtype == torch.float32 else torch.empty_like(s32, dtype=value.dtype)
    context = query.new_empty(rows * longest * head_dim, dtype=value.dtype)
    # Written as (b, h, L, d) and returned transposed, as SDPA's wrapper does. A padded
    # query position holds zeros, or attention over its sequence's real keys when a
    # longer sequence shares its group: pooling and later layers ignore it either way.
    out = query.new_zeros(batch, heads, length, head_dim)
    for start, stop, n in spans:
        g = (stop - start) * heads
        shape = (stop - start, heads, n, head_dim)
        q = q32[: g * n * head_dim].view(shape).copy_(query[start:stop, :, :n]).mul_(scale)
        k = k32[: g * n * head_dim].view(shape).copy_(key[start:stop, :, :n])
        scores = s32[: g * n * n].view(g, n, n)
        torch.bmm(q.view(g, n, head_dim), k.view(g, n, head_dim).transpose(1, 2), out=scores)
        for i in range(start, stop):
            if lengths[i] < n:  # a shorter sequence in the group: mask its padded keys
                grid = scores.view(stop - start, heads, n, n)[i - start]
                grid[:, :, lengths[i] :] = float("-inf")
        torch.softmax(scores, dim=-1, out=scores)
        p = probs[: g * n * n].view(g, n, n)
        if p.data_ptr() != scores.data_ptr():
            p.copy_(scores)
        c = context[: g * n * head_dim].view(g, n, head_dim)
        if stop - start == 1:
            torch.bmm(p, value[start, :, :n], out=c)
        else:
            torch.bmm(p, value[start:stop, :, :n].reshape(g, n, head_dim), out=c)
        out[start:stop, :, :n] = c.view(shape)
    out = out.transpose(1, 2)
    return out, None


def register(name: str = NAME, function=small_head_attention) -> str:
    """Make `name` a valid `attn_implementation` running `function` (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(name, function)
    # A new name gets no mask builder of its own: build the padding mask as for SDPA.
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    return name
