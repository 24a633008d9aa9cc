"""Linear layers in int8 on CPUs with int8 dot-product instructions (AVX512-VNNI / AMX).

`CORPUSMILL_DTYPE=int8` (opt-in): in every BERT layer, Q/K/V (one fused product) and the
FFN up-projection (GELU inside the product) run as oneDNN int8 products; the attention
output, the FFN down-projection, LayerNorm, softmax, the residual stream and pooling stay as
in the bf16 engine. Weights are symmetric int8 with one scale per output channel, quantised
once at load from the float32 weights and packed (`onednn.qlinear_prepack`). Activations get
one asymmetric uint8 scale per call (`quantize_per_tensor_dynamic`); `qlinear_pointwise`
dequantises, adds the bias (and GELU) and writes bf16 within the product: the kernel
inductor's x86 int8 path calls, used without compiling.

Which layers, measured on the 2-core Zen 4 CPU (`python -m bench.int8_probe speed`,
figures in docs/REJECTED.md): the FFN down-projection in int8 costs quality (its input,
after GELU, carries the outliers: worst cosine to float32 0.987 instead of 0.995) and
speed (quantising its 1536-wide input costs more than the product saves); the attention
output in int8 was no faster (its bf16 input is copied to float32 and quantised for 1/12
of the Linear FLOPs) and moved the worst vector further (0.992). The whole engine runs
1.08-1.12x the bf16 one; SciFact nDCG@10 0.6415 against bf16's 0.6435. Per-token int8 scales through `torch._int_mm` were 0.53-0.58x of
bf16: the eager quantise/dequantise passes cost more than the product saves. oneDNN's int8
product with signed int8 activations falls back to a reference loop (33 s for one
4096x384x1536 product), hence uint8 with a zero point.

The ops are internal to torch, so each int8 layer is checked against `F.linear` on a probe
input when it is built, as `packed_linear.pack_linear` does.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F

ROWS_HINT = 4096  # rows per product the packing is tuned for: the CPU token budget
# Relative distance of an int8 product from float32's on the random probe: int8 rounding
# of weights and activations puts it at ~0.9% on MiniLM's shapes; 3% refuses a wrong scale
# or layout (which is off by ~100%) without refusing int8 noise.
PROBE_TOLERANCE = 3e-2


def _weight_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8 weights and their float32 scales."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


class Int8Linear(torch.nn.Module):
    """`nn.Linear` (optionally followed by exact GELU) with int8 weights and dynamically
    quantised uint8 activations, one oneDNN product; bf16 out, any float input."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool = False):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.gelu = gelu
        q, self.w_scale = _weight_int8(weight)
        self.packed_weight = torch.ops.onednn.qlinear_prepack(q, [ROWS_HINT, self.in_features])
        self.w_zero_point = torch.zeros(self.out_features, dtype=torch.int64)
        self.bias = None if bias is None else bias.detach().float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).float()
        qx = torch.quantize_per_tensor_dynamic(rows, torch.quint8, False)
        out = torch.ops.onednn.qlinear_pointwise(
            qx.int_repr(),
            qx.q_scale(),
            qx.q_zero_point(),
            self.packed_weight,
            self.w_scale,
            self.w_zero_point,
            self.bias,
            1.0,
            0,
            torch.bfloat16,
            "gelu" if self.gelu else "none",
            [],
            "none",
        )
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, gelu={self.gelu}"


class FusedQKV(torch.nn.Module):
    """Query, key and value as one int8 product: the input is quantised once, not three
    times, and one 384x1152 product runs instead of three. BERT's attention calls query,
    key and value in turn on the same tensor; each becomes a `QKVPart`, the first call
    computes all three, the others take their slice. The last input and output are kept
    per thread (the engine's thread and a caller's may run the model at once) and dropped
    after the value slice."""

    def __init__(self, query: torch.nn.Linear, key: torch.nn.Linear, value: torch.nn.Linear):
        super().__init__()
        parts = (query, key, value)
        biases = [m.bias for m in parts]
        bias = None if any(b is None for b in biases) else torch.cat(biases)  # type: ignore[arg-type]
        self.linear = Int8Linear(torch.cat([m.weight for m in parts]), bias)
        self.sizes = [m.out_features for m in parts]
        self.offsets = [0, self.sizes[0], self.sizes[0] + self.sizes[1]]
        self._last = threading.local()

    def part(self, x: torch.Tensor, index: int) -> torch.Tensor:
        last = self._last
        if getattr(last, "input", None) is not x:
            last.input, last.output = x, self.linear(x)
        out = last.output.narrow(-1, self.offsets[index], self.sizes[index])
        if index == 2:
            last.input = last.output = None
        return out


class QKVPart(torch.nn.Module):
    def __init__(self, fused: FusedQKV, index: int) -> None:
        super().__init__()
        self.fused = fused
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fused.part(x, self.index)


def supported() -> bool:
    """This torch has oneDNN's int8 linear ops (the CPU check is in `hardware`)."""
    # quantize_per_tensor_dynamic is deprecated in torch 2.13 (a warning, once): the one
    # fused min/max + quantise kernel eager torch has; its absence turns this path off.
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.onednn, "qlinear_pointwise")
        and hasattr(torch, "quantize_per_tensor_dynamic")
    )


def probe_error(layer: Int8Linear, weight: torch.Tensor, bias: torch.Tensor | None) -> float:
    """Relative distance of `layer` from float32 `F.linear` (then GELU) on a probe input."""
    probe = torch.randn(7, layer.in_features, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = F.linear(probe, weight.float(), None if bias is None else bias.float())
        if layer.gelu:
            want = F.gelu(want)
        got = layer(probe).float()
    if got.shape != want.shape or not bool(torch.isfinite(got).all()):
        return float("inf")
    return float((got - want).norm() / want.norm().clamp_min(1e-12))


def _checked(layer: Int8Linear, weight, bias) -> Int8Linear:
    err = probe_error(layer, weight, bias)
    if err > PROBE_TOLERANCE:
        raise RuntimeError(f"int8 product is {err:.3f} from F.linear (tolerance {PROBE_TOLERANCE})")
    return layer


def quantize_bert_layers(model: torch.nn.Module) -> int:
    """Swap, in place, Q/K/V and the FFN up-projection of every BERT-family encoder layer
    of a float32 CPU model; returns how many Linear layers now run in int8. Raises
    `RuntimeError` when the model has no BERT layers or a layer fails its probe."""
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not layers:
        raise RuntimeError(f"{type(model).__name__} has no BERT-style encoder layers")
    gelu = getattr(model.config, "hidden_act", None) == "gelu"  # exact (erf) GELU
    count = 0
    for layer in layers:
        sa, inter = layer.attention.self, layer.intermediate
        fused = FusedQKV(sa.query, sa.key, sa.value)
        parts = (sa.query, sa.key, sa.value)
        biases = [m.bias for m in parts]
        qkv_b = None if any(b is None for b in biases) else torch.cat(biases)
        _checked(fused.linear, torch.cat([m.weight for m in parts]), qkv_b)
        new_in = _checked(
            Int8Linear(inter.dense.weight, inter.dense.bias, gelu=gelu),
            inter.dense.weight,
            inter.dense.bias,
        )
        sa.query, sa.key, sa.value = (QKVPart(fused, i) for i in range(3))
        inter.dense = new_in
        if gelu:
            inter.intermediate_act_fn = torch.nn.Identity()
        count += 4
    return count
