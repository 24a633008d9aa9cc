"""Tensor-level pieces of the forward pass: pooling, precast weights, torch.compile."""

from __future__ import annotations

from corpusmill.model.card import PoolingSpec


def compile_model(model):
    """`torch.compile` (inductor) with symbolic shapes and frozen weights.

    Eager PyTorch runs LayerNorm, GELU, the residual adds and the dtype casts as separate
    memory-bound kernels between the matmuls; inductor fuses them. Measured on the 2-core
    CPU (MiniLM-L6, bf16, SciFact chunks, interleaved A/B): 1.23-1.28x the eager engine,
    vectors unchanged (cosine to float32 0.99997 either way). The price is paid once, on
    the first forwards (the resource's warm-up compiles two graphs): 32-90 s for MiniLM-L6
    on 2 cores, every run, so it is opt-in (`CORPUSMILL_COMPILE=1`) and pays off only for
    runs that embed for several minutes (1.09-1.15x in the 5-round benchmarks, 1.06-1.10x over
    the eager engine with packed Linear weights). `dynamic=True` keeps one graph for every
    later batch shape instead of one per shape.
    Needs a C++ compiler on the machine (inductor generates C++ for CPUs).
    """
    import torch
    import torch._inductor.config as inductor_config

    # Weights never change after load: let inductor constant-fold them into the graph.
    inductor_config.freezing = True
    return torch.compile(model, dynamic=True)


def precast_linear_weights(model, dtype) -> int:
    """Cast every nn.Linear's weight and bias to `dtype` in place; returns how many."""
    import torch

    count = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.to(dtype)
            count += 1
    return count


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
