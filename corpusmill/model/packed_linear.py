"""Linear layers as oneDNN inner products on weights packed once, at load (CPU, bf16/fp16).

Eager `F.linear` on a bf16 CPU tensor goes to MKL with the plain weight, every call.
oneDNN can lay each weight out in its blocked format once (`mkldnn._reorder_linear_weight`)
and then run every product on it (`mkldnn._linear_pointwise`): the two ops inductor's
weight-freezing pass puts into a compiled graph, used here without compiling. The
arithmetic is the same (bf16 inputs, float32 accumulation, bf16 out). Measured on the
2-core CPU, MiniLM-L6 on SciFact chunks: the whole engine 1.06-1.08x faster than with
`F.linear`, worst cosine to float32 0.999973 either way (`make bench`, its
`engine_vs_plain_linear` ratio; docs/BENCHMARKS.md).

The packed weights are plain tensor attributes, not parameters: the model stays on the CPU.

The ops are internal to torch (underscore names), so every layer is checked against
`F.linear` on a probe input when it is packed; a torch without them, or a layer whose
packed result differs, keeps its plain `nn.Linear`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ROWS_HINT = 4096  # rows per product the packing is tuned for: the CPU token budget
# How far a packed product may be from F.linear's, relative to its norm. One rounding to
# bf16 moves a product ~1.7e-3 from float32 (measured on MiniLM's shapes); the packed and
# plain products came out identical there. 4e-3 allows a different summation order and
# refuses a layer that is off by a systematic 1%.
PROBE_TOLERANCE = 4e-3


class PackedLinear(torch.nn.Module):
    """`nn.Linear` in `dtype` (bf16/fp16) on a packed weight; takes any float input and
    casts it to `dtype` first, as autocast does for `F.linear`."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.dtype = linear.weight.dtype
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(
            linear.weight.detach(), ROWS_HINT
        )
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.to(self.dtype).reshape(-1, self.in_features)
        out = torch.ops.mkldnn._linear_pointwise(
            rows, self.packed_weight, self.bias, "none", [], ""
        )
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, dtype={self.dtype}"
        )


def supported(dtype: torch.dtype) -> bool:
    """oneDNN is built in and runs `dtype` natively on this CPU (float32 on every CPU it
    runs on; bf16 and fp16 where the CPU has instructions for them)."""
    ops = torch.ops.mkldnn
    if not (torch.backends.mkldnn.is_available() and hasattr(ops, "_linear_pointwise")):
        return False
    if dtype == torch.float32:  # wherever oneDNN runs at all
        return True
    check = {
        torch.bfloat16: "_is_mkldnn_bf16_supported",
        torch.float16: "_is_mkldnn_fp16_supported",
    }.get(dtype)
    return check is not None and hasattr(ops, check) and bool(getattr(ops, check)())


def pack_linear(linear: torch.nn.Linear) -> PackedLinear | None:
    """The packed layer, or None when its output differs from `F.linear`'s or packing fails."""
    try:
        packed = PackedLinear(linear)
        probe = torch.randn(7, linear.in_features, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            want = F.linear(probe.to(packed.dtype), linear.weight, linear.bias).float()
            got = packed(probe).float()
    except RuntimeError:
        return None
    if got.shape != want.shape or not bool(torch.isfinite(got).all()):
        return None
    if float((got - want).norm() / want.norm().clamp_min(1e-12)) > PROBE_TOLERANCE:
        return None
    return packed


def pack_linear_layers(model: torch.nn.Module) -> int:
    """Replace, in place, every bf16/fp16 `nn.Linear` of a CPU model that packs cleanly;
    returns how many were replaced (0 when this torch or CPU cannot). A float32 model is
    left on `F.linear`: Transformers' float32 forward is the reference every faster path
    is checked against."""
    layers = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, torch.nn.Linear) and child.weight.device.type == "cpu"
    ]
    count = 0
    for parent, name, linear in layers:
        if linear.weight.dtype == torch.float32 or not supported(linear.weight.dtype):
            continue
        packed = pack_linear(linear)
        if packed is not None:
            setattr(parent, name, packed)
            count += 1
    return count
