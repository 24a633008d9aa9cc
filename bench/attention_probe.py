"""Why the CPU engine stops near half the matmul peak: the attention kernel, measured alone.

MiniLM-L6's attention at the benchmark's shapes (a 4k-token batch of ~200-token SciFact
chunks: 20 sequences x 12 heads x 200 positions x head size 32), four ways:
- torch's SDPA (on a CPU: its flash-attention kernel), with and without a padding mask,
  in bf16 and float32;
- the same product written as two batched matmuls and a softmax in bf16 (what a faster
  path would have to be), with its error against float32;
- `small_head_attention.py` (float32 scores per cache-sized group; tried, not kept).
Worst cosines are over real (unpadded) query positions.
Attention is ~7% of MiniLM's FLOPs at this length; the profiler puts it at ~25% of the
engine's CPU forward time. Its two matmuls alone run ~3x faster than the kernel, but a
bf16 matmul rounds the scores to bf16 before the softmax (CPU torch has no bf16 x bf16 ->
float32 batched matmul), which is where the precision goes.

    .venv/bin/python bench/attention_probe.py   # prints a table and one JSON line last
"""

from __future__ import annotations

import json
import statistics
import time


def _ms(fn, n: int = 20) -> float:
    fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> int:
    import small_head_attention
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    b, h, length, d = 20, 12, 200, 32
    flops = 4 * b * h * length * length * d  # Q K^T and A V
    keep = torch.arange(length)[None, :] < torch.randint(180, length + 1, (b,))[:, None]
    out: dict = {"shape": [b, h, length, d]}
    q32, k32, v32 = (torch.randn(b, h, length, d) for _ in range(3))
    with torch.inference_mode():
        for dtype in (torch.float32, torch.bfloat16):
            q, k, v = q32.to(dtype), k32.to(dtype), v32.to(dtype)
            bias = torch.zeros(b, 1, 1, length, dtype=dtype).masked_fill(
                ~keep[:, None, None, :], float("-inf")
            )

            def sdpa_masked(q=q, k=k, v=v, bias=bias):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)

            def sdpa_plain(q=q, k=k, v=v):
                return F.scaled_dot_product_attention(q, k, v)

            def small_heads(q=q, k=k, v=v, keep=keep):
                # bench/small_head_attention.py on the same padded batch (tried, not kept)
                return small_head_attention.small_head_attention(
                    None, q, k, v, keep[:, None, None, :].expand(b, 1, length, length)
                )[0].transpose(1, 2)

            def by_matmuls(q=q, k=k, v=v, bias=bias):
                scores = torch.matmul(q * d**-0.5, k.transpose(-1, -2)).add_(bias)
                return torch.matmul(scores.softmax(-1), v)

            name = str(dtype).removeprefix("torch.")
            for label, fn in (
                ("sdpa_masked", sdpa_masked),
                ("sdpa_no_mask", sdpa_plain),
                ("two_matmuls_and_softmax", by_matmuls),
                ("small_head_attention", small_heads),
            ):
                ms = _ms(fn)
                out[f"{name}_{label}_ms"] = round(ms, 2)
                out[f"{name}_{label}_gflops"] = round(flops / ms / 1e6, 1)
            scores = torch.matmul(q, k.transpose(-1, -2))
            out[f"{name}_qk_matmul_only_ms"] = round(
                _ms(lambda q=q, k=k: torch.matmul(q, k.transpose(-1, -2))), 2
            )
            out[f"{name}_softmax_only_ms"] = round(_ms(lambda s=scores: s.softmax(-1)), 2)
            if dtype == torch.bfloat16:
                ref = F.scaled_dot_product_attention(q32, k32, v32, attn_mask=bias.float()).reshape(
                    -1, d
                )
                real = keep[:, None, :, None].expand(b, h, length, d).reshape(-1, d)[:, 0]
                for label, fn in (
                    ("sdpa", sdpa_masked),
                    ("two_matmuls", by_matmuls),
                    ("small_head_attention", small_heads),
                ):
                    cos = F.cosine_similarity(fn().float().reshape(-1, d), ref, dim=-1)[real]
                    out[f"bf16_{label}_worst_cosine_vs_float32"] = round(cos.min().item(), 6)
    for key, value in out.items():
        print(f"{key:48s} {value}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
