"""Self-attention for encoder models on a CPU: plain matmuls over cache-sized slices.

On the 2-core CPU, torch's SDPA picks its flash kernel for bf16 and spends ~27-37% of
MiniLM-L6's forward there: with 32-wide heads its blocked loop does little work per step.
Two batched matmuls with a float32 softmax between them are 1.6-1.8x faster per call at
100-256 tokens, on two conditions: the batch is cut into slices of about
`SCORES_PER_SLICE` scores (over a whole 4k-token batch the scores spill out of cache and
the same code is ~5x slower than flash), and every slice reuses the same buffers (fresh
multi-MB tensors went through glibc's mmap and page faults, and the call took 6 to 29 ms
by the allocator's mood). The whole engine: 1.10-1.12x in bf16, 1.13-1.19x with int8
(`make bench`, `engine_vs_sdpa_attention`; docs/BENCHMARKS.md).

Numerics: the score matmul rounds to the compute dtype (as eager attention does), the
scale, mask and softmax run in float32, and the probabilities are rounded to the compute
dtype for the value product. Worst cosine to float32 on SciFact chunks 0.99996 (SDPA's
0.99997).

It is a Transformers attention function, registered under `NAME` with the same mask
builder as SDPA (`masking_utils.sdpa_mask`), and used only by non-causal (encoder) layers:
a causal layer, whose mask SDPA may leave implicit, falls back to SDPA.
"""

from __future__ import annotations

import threading

import torch

NAME = "corpusmill_cpu"
# Scores per slice: with reused buffers, 256k to 2M scores ran within 10% of each other at
# 100-256 tokens; whole batches (8M+) spill.
SCORES_PER_SLICE = 1 << 20
_MASKED = torch.finfo(torch.float32).min  # finite, so a fully masked row cannot make NaN


def sliced_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """`softmax(q k^T * scaling + mask) v` for (batch, heads, len, dim) inputs, returned as
    (batch, len, heads, dim), the layout Transformers' attention functions return."""
    if getattr(module, "is_causal", False) or kwargs.get("is_causal") or module.training:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    batch, heads, q_len, _ = query.shape
    k_len = key.shape[-2]
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    bias = _additive(attention_mask)
    step = max(1, SCORES_PER_SLICE // (heads * q_len * k_len))
    out = torch.empty(batch, q_len, heads, value.shape[-1], dtype=value.dtype)
    for start in range(0, batch, step):
        rows = slice(start, start + step)
        n = min(step, batch - start)
        raw = _scratch.take("raw", (n, heads, q_len, k_len), query.dtype)
        scores = _scratch.take("scores", (n, heads, q_len, k_len), torch.float32)
        mixed = _scratch.take("mixed", (n, heads, q_len, value.shape[-1]), value.dtype)
        torch.matmul(query[rows], key[rows].transpose(-1, -2), out=raw)
        # One pass to float32, scaled and masked; softmax in place; back to the compute
        # dtype in the buffer the raw scores are done with.
        if bias is None:
            torch.mul(raw, scale, out=scores)
        else:
            torch.add(bias[rows], raw, alpha=scale, out=scores)
        torch.softmax(scores, dim=-1, out=scores)
        probs = raw.copy_(scores)
        torch.matmul(probs, value[rows], out=mixed)
        out[rows] = mixed.transpose(1, 2)
    return out, None


class _Scratch(threading.local):
    """Buffers reused by every slice and call on a thread. Fresh multi-MB tensors per slice
    went through glibc's mmap and page faults each time: the same attention ran 6-29 ms
    per call instead of a steady 6, depending on the allocator's state."""

    def take(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        size = 1
        for dim in shape:
            size *= dim
        # A buffer made under inference_mode cannot be written outside it: one set each.
        name = f"{name}_{'inference' if torch.is_inference_mode_enabled() else 'grad'}"
        buf = getattr(self, name, None)
        if buf is None or buf.dtype != dtype or buf.numel() < size:
            buf = torch.empty(size, dtype=dtype)
            setattr(self, name, buf)
        return buf[:size].view(shape)


_scratch = _Scratch()
_last_mask = threading.local()


def _additive(mask: torch.Tensor | None) -> torch.Tensor | None:
    """The mask as a float32 bias (0 where seen, a large negative where masked). Every layer
    of one forward gets the same mask tensor, so its bias is built once and kept (per
    thread) until a different mask comes."""
    if mask is None or mask.dtype != torch.bool:
        return None if mask is None else mask.float()
    last = _last_mask
    if getattr(last, "mask", None) is not mask:
        zero = torch.zeros((), dtype=torch.float32)
        last.bias = torch.where(mask, zero, torch.tensor(_MASKED, dtype=torch.float32))
        last.mask = mask
    return last.bias


def use_sliced_attention(model: torch.nn.Module) -> bool:
    """Switch a CPU encoder model to `sliced_attention`; False (model unchanged) for a
    decoder or a model whose Transformers cannot switch attention functions."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_decoder", False):
        return False
    try:
        from transformers import AttentionInterface, AttentionMaskInterface
        from transformers.masking_utils import sdpa_mask

        AttentionInterface.register(NAME, sliced_attention)
        AttentionMaskInterface.register(NAME, sdpa_mask)
        model.set_attn_implementation(NAME)  # type: ignore[operator]  # a PreTrainedModel
    except (ImportError, ValueError, AttributeError):
        return False
    return getattr(config, "_attn_implementation", None) == NAME
