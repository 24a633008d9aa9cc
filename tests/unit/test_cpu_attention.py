"""CPU attention as matmuls over cache-sized slices: SDPA's result, the mask obeyed across
slices, causal layers left to SDPA, and the encoder's vectors unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from corpusmill.engine.runner import BatchEngine
from corpusmill.model import cpu_attention
from corpusmill.model.cpu_attention import sliced_attention, use_sliced_attention
from corpusmill.model.encoder import TransformerEncoder
from tests.texts import MIXED_TEXTS
from tests.vectors import cosine_rows


class _Layer(torch.nn.Module):
    """What an attention function reads of its layer: `is_causal` and `training`."""

    def __init__(self, is_causal: bool = False) -> None:
        super().__init__()
        self.is_causal = is_causal
        self.eval()


def _qkv(batch=5, heads=3, length=9, dim=8):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(batch, heads, length, dim, generator=g) for _ in range(3)]


def _padding_mask(lengths: list[int], length: int) -> torch.Tensor:
    """Transformers' SDPA mask for a padded encoder batch: (batch, 1, len, len), True = see."""
    keys = torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]
    return keys[:, None, None, :].expand(-1, 1, length, length)


@pytest.mark.parametrize("slice_scores", [1, 10_000, 1 << 20])
def test_sliced_attention_equals_sdpa_with_a_padding_mask(monkeypatch, slice_scores):
    """One sequence per slice, a few per slice, the whole batch in one: the same result."""
    monkeypatch.setattr(cpu_attention, "SCORES_PER_SLICE", slice_scores)
    q, k, v = _qkv()
    mask = _padding_mask([9, 4, 1, 7, 9], 9)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
    got, weights = sliced_attention(_Layer(), q, k, v, mask, scaling=None)
    assert weights is None and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_an_additive_float_mask_and_an_explicit_scale_are_applied():
    q, k, v = _qkv()
    bias = torch.zeros(5, 1, 9, 9).masked_fill_(~_padding_mask([2, 9, 5, 3, 8], 9), -1e9)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=0.3).transpose(1, 2)
    got, _ = sliced_attention(_Layer(), q, k, v, bias, scaling=0.3)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_causal_layer_is_left_to_sdpa():
    q, k, v = _qkv()
    want = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)
    got, _ = sliced_attention(_Layer(is_causal=True), q, k, v, None)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_decoder_model_is_not_switched(tiny_embedder_path):
    enc = TransformerEncoder(tiny_embedder_path, device="cpu", dtype="float32", cpu_attention=False)
    enc.model.config.is_decoder = True
    assert use_sliced_attention(enc.model) is False
    assert enc.model.config._attn_implementation != cpu_attention.NAME


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_encoder_uses_it_on_a_cpu_and_its_vectors_do_not_change(tiny_embedder_path, dtype):
    """Mixed lengths, so most rows are padded: a mask ignored anywhere moves those rows."""
    sliced = TransformerEncoder(tiny_embedder_path, device="cpu", dtype=dtype)
    sdpa = TransformerEncoder(tiny_embedder_path, device="cpu", dtype=dtype, cpu_attention=False)
    assert sliced.attention_kernel == "sliced"
    assert sdpa.attention_kernel == "sdpa"
    got, _ = BatchEngine(sliced).encode(MIXED_TEXTS)
    want, _ = BatchEngine(sdpa).encode(MIXED_TEXTS)
    floor = 0.99999 if dtype == "float32" else 0.999
    assert float(np.min(cosine_rows(got, want))) > floor
    # Each text alone (no padding) gives the vector it got inside the padded batch.
    alone = np.stack([BatchEngine(sliced).encode([t])[0][0] for t in MIXED_TEXTS])
    assert float(np.min(cosine_rows(got, alone))) > floor


def test_reused_buffers_give_each_call_its_own_result_across_shapes_dtypes_and_threads():
    """Larger, then smaller, then another dtype, and two threads at once: every call equals
    SDPA on its own inputs (a buffer shared wrongly would leak one call into another)."""
    from concurrent.futures import ThreadPoolExecutor

    cases = []
    for batch, length, dtype in [
        (3, 17, torch.float32),
        (2, 5, torch.float32),
        (4, 9, torch.bfloat16),
    ]:
        q, k, v = (t.to(dtype) for t in _qkv(batch=batch, length=length))
        lengths = [length - i % length for i in range(batch)]
        cases.append((q, k, v, _padding_mask(lengths, length)))

    def check(case) -> float:
        q, k, v, mask = case
        want = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
        got, _ = sliced_attention(_Layer(), q, k, v, mask)
        return float((got.float() - want.transpose(1, 2)).abs().max())

    tolerance = {torch.float32: 1e-5, torch.bfloat16: 5e-2}
    for case in cases:
        assert check(case) < tolerance[case[0].dtype]
    with ThreadPoolExecutor(2) as pool:
        errors = list(pool.map(check, cases * 20))
    assert max(e for e, c in zip(errors, cases * 20) if c[0].dtype == torch.float32) < 1e-5
