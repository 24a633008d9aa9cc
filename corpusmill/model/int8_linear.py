"""Linear layers in int8 on CPUs with int8 dot-product instructions (AVX512-VNNI / AMX).

Weights: symmetric int8, one scale per output channel, quantised once at load and packed
for oneDNN (`onednn.qlinear_prepack`). Activations: quantised on every call.

Two ways are kept apart by `scheme`:
    tensor  one asymmetric uint8 scale for the whole input (`quantize_per_tensor_dynamic`),
            then `onednn.qlinear_pointwise`, which dequantises, adds the bias and writes
            bf16 inside the same oneDNN product (what inductor's x86 int8 path calls);
    token   one symmetric int8 scale per row (token), `torch._int_mm` to int32, then the
            int32 product scaled by (row scale x channel scale) plus bias, in float32.
oneDNN's int8 product with signed int8 activations falls back to a reference loop here
(33 s for one 4096x384x1536 product), so the `tensor` scheme feeds it uint8 with a zero
point.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F

ROWS_HINT = 4096  # rows per product the packing is tuned for: the CPU token budget
SCHEMES = ("tensor", "token")


def _weight_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8 weights and their float32 scales."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


class Int8Linear(torch.nn.Module):
    """`nn.Linear` with int8 weights and dynamically quantised int8 activations; bf16 out."""

    def __init__(
        self, linear: torch.nn.Linear, scheme: str = "tensor", post_op: str = "none"
    ) -> None:
        super().__init__()
        if scheme not in SCHEMES:
            raise ValueError(f"scheme={scheme!r} is not one of {SCHEMES}")
        if post_op not in ("none", "gelu") or (post_op != "none" and scheme != "tensor"):
            raise ValueError(f"post_op={post_op!r} needs scheme 'tensor' and is none|gelu")
        self.scheme = scheme
        self.post_op = post_op
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        q, scale = _weight_int8(linear.weight)
        self.w_scale = scale
        self.bias = (
            torch.zeros(self.out_features) if linear.bias is None else linear.bias.detach().float()
        )
        if scheme == "tensor":
            self.packed_weight = torch.ops.onednn.qlinear_prepack(q, [ROWS_HINT, self.in_features])
            self.w_zero_point = torch.zeros(self.out_features, dtype=torch.int64)
        else:
            self.weight_t = q.t()  # [in, out], a view of [out, in]: oneDNN's fast layout
            self.w_scale_row = scale[None, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if self.scheme == "tensor":
            qx = torch.quantize_per_tensor_dynamic(rows.float(), torch.quint8, False)
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
                self.post_op,
                [],
                "none",
            )
        else:
            scale = torch.linalg.vector_norm(rows, float("inf"), dim=1, keepdim=True, dtype=torch.float32)
            scale = scale.clamp_min_(1e-12).div_(127.0)
            q = torch.round(rows / scale).to(torch.int8)
            acc = torch._int_mm(q, self.weight_t)
            out = torch.addcmul(self.bias, acc, scale * self.w_scale_row).to(torch.bfloat16)
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, scheme={self.scheme}"


def check(linear: torch.nn.Linear, layer: Int8Linear) -> float:
    """Relative distance of `layer` from `F.linear` in float32 on a probe input."""
    probe = torch.randn(7, linear.in_features, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = F.linear(probe, linear.weight.float(), None if linear.bias is None else linear.bias.float())
        got = layer(probe).float()
    return float((got - want).norm() / want.norm().clamp_min(1e-12))


class FusedQKV(torch.nn.Module):
    """Query, key and value as one int8 product: the input is quantised once, not three
    times, and one 384x1152 product runs instead of three 384x384 ones. BERT's attention
    calls query, key and value in turn on the same tensor; each is replaced by a
    `QKVPart`, the first call computes all three, the others take their slice. The last
    input and output are kept per thread (the engine's thread and a caller's may run the
    model at once) and dropped after the value slice."""

    def __init__(self, query: torch.nn.Linear, key: torch.nn.Linear, value: torch.nn.Linear):
        super().__init__()
        fused = torch.nn.Linear(query.in_features, 0)
        fused.weight = torch.nn.Parameter(
            torch.cat([m.weight.detach().float() for m in (query, key, value)]),
            requires_grad=False,
        )
        fused.bias = torch.nn.Parameter(
            torch.cat([m.bias.detach().float() for m in (query, key, value)]),  # type: ignore[union-attr]
            requires_grad=False,
        )
        fused.out_features = fused.weight.shape[0]
        self.linear = Int8Linear(fused)
        self.sizes = [query.out_features, key.out_features, value.out_features]
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
