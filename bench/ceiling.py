"""The machine's limit: matmul throughput, converted to a tokens/s ceiling for a BERT model.

Two ceilings, both measured, never assumed:
- *peak*: a square 2048^3 matmul, the best case for the hardware;
- *model shapes*: exactly the matmuls one encoder layer runs for a batch of T tokens
  (Q, K, V and output projections h x h, FFN h x i and i x h, attention scores and values at
  the corpus' padded sequence length), timed back to back. Everything else the model does
  (LayerNorm, GELU, softmax, embedding lookups) is left out, so this is an upper bound.
The engine's fraction of the model-shape ceiling is the honest "how close to the metal".

On the shared 2-core machine bf16 (AMX) matmul throughput swings 2x from one half-second to
the next (524-1,059 GFLOP/s for a 2048^3 matmul within a minute, measured), while a
contender's run lasts seconds and averages over it. So each figure here is the median of
several short trials, not one sample: a lucky half-second would set an unreachable
ceiling, an unlucky one a flattering fraction.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class BertShape:
    layers: int
    hidden: int
    intermediate: int
    heads: int

    @classmethod
    def from_config(cls, config: dict) -> BertShape:
        """From the model's config.json values."""
        return cls(
            int(config["num_hidden_layers"]),
            int(config["hidden_size"]),
            int(config["intermediate_size"]),
            int(config["num_attention_heads"]),
        )

    def flops_per_token(self, seq_len: float) -> float:
        """Multiply-adds x 2 per token: 4 h x h projections, the FFN, and attention
        (Q K^T and A V each cost 2 * seq_len * h per token)."""
        h, i = self.hidden, self.intermediate
        per_layer = 2 * (4 * h * h + 2 * h * i) + 2 * 2 * seq_len * h
        return self.layers * per_layer


TRIALS = 5


def _timed(fn, min_seconds: float, trials: int = TRIALS) -> float:
    """Seconds per call: warm once, then the median over `trials` trials, each repeating
    the call until `min_seconds` have passed."""
    fn()
    per_call = []
    for _ in range(trials):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                per_call.append(elapsed / calls)
                break
    return statistics.median(per_call)


def square_gflops(dtype_name: str, n: int = 2048, min_seconds: float = 0.5) -> float:
    """The faster of two kernels for one square product: `torch.mm` (MKL) and oneDNN's
    product on a packed weight, which the engine's Linear layers run. On the AVX2 machine
    the packed float32 product ran 1.3-1.5x MKL's, and a ceiling of `torch.mm` alone put
    the engine above its own ceiling."""
    import torch

    from corpusmill.model import packed_linear

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    seconds = _timed(lambda: a @ b, min_seconds)
    if packed_linear.supported(dtype):
        w = torch.ops.mkldnn._reorder_linear_weight(b, n)
        packed = torch.ops.mkldnn._linear_pointwise
        seconds = min(seconds, _timed(lambda: packed(a, w, None, "none", [], ""), min_seconds))
    return 2 * n**3 / seconds / 1e9


def model_shape_tokens_per_s(
    shape: BertShape, dtype_name: str, seq_len: int, tokens: int = 4096, min_seconds: float = 0.5
) -> tuple[float, float]:
    """(tokens/s, GFLOP/s) if the model did nothing but its matmuls, at these shapes."""
    import torch

    dtype = getattr(torch, dtype_name)
    h, i, heads = shape.hidden, shape.intermediate, shape.heads
    rows = max(1, tokens // seq_len)
    t = rows * seq_len
    x = torch.randn(t, h, dtype=dtype)
    w_hh = [torch.randn(h, h, dtype=dtype) for _ in range(4)]
    w_up, w_down = torch.randn(i, h, dtype=dtype), torch.randn(h, i, dtype=dtype)
    up = torch.randn(t, i, dtype=dtype)
    q = torch.randn(rows * heads, seq_len, h // heads, dtype=dtype)
    scores = torch.randn(rows * heads, seq_len, seq_len, dtype=dtype)
    F = torch.nn.functional

    def layer():
        with torch.inference_mode():
            for w in w_hh:
                F.linear(x, w)
            torch.bmm(q, q.transpose(1, 2))
            torch.bmm(scores, q)
            F.linear(x, w_up)
            F.linear(up, w_down)

    seconds = _timed(layer, min_seconds)
    flops = t * shape.flops_per_token(seq_len) / shape.layers
    return t / seconds / shape.layers, flops / seconds / 1e9


def measure(shape: BertShape, seq_len: int, tokens: int, quick: bool = False) -> dict:
    """Both ceilings in float32 and bfloat16 (bf16 only where the CPU runs it natively)."""
    from corpusmill.model.hardware import cpu_supports_bf16

    min_s = 0.1 if quick else 0.3
    out: dict = {"flops_per_token": round(shape.flops_per_token(seq_len)), "seq_len": seq_len}
    for dt in ("float32", "bfloat16"):
        if dt == "bfloat16" and not cpu_supports_bf16():
            continue
        peak = square_gflops(dt, min_seconds=min_s)
        tps, gflops = model_shape_tokens_per_s(shape, dt, seq_len, tokens, min_s)
        out[f"{dt}_peak_gflops"] = round(peak, 1)
        out[f"{dt}_peak_tokens_per_s"] = round(peak * 1e9 / shape.flops_per_token(seq_len))
        out[f"{dt}_model_shape_gflops"] = round(gflops, 1)
        out[f"{dt}_model_shape_tokens_per_s"] = round(tps)
    return out
