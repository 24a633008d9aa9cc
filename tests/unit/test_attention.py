"""The CPU attention for small heads (corpusmill/engine/attention.py) against torch's SDPA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from corpusmill.engine import attention


def padding_mask(lengths: list[int], length: int, *, left: bool = False) -> torch.Tensor:
    positions = torch.arange(length)[None, :]
    counts = torch.tensor(lengths)[:, None]
    keep = positions >= length - counts if left else positions < counts
    return keep[:, None, None, :].expand(len(lengths), 1, length, length)


def sdpa_reference(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)


class Module:  # what transformers passes as `module`: only read for `training`/`is_causal`
    training = False
    is_causal = False


def test_key_lengths_reads_right_padding_and_refuses_anything_else():
    mask = padding_mask([5, 3, 1], 5)
    assert attention.key_lengths(mask, 3, 5) == [5, 3, 1]
    assert attention.key_lengths(None, 2, 7) == [7, 7]
    additive = torch.zeros(3, 1, 5, 5).masked_fill(~mask, float("-inf"))
    assert attention.key_lengths(additive, 3, 5) == [5, 3, 1]
    assert attention.key_lengths(padding_mask([5, 3, 1], 5, left=True), 3, 5) is None
    causal = torch.ones(5, 5, dtype=torch.bool).tril()[None, None].expand(3, 1, 5, 5)
    assert attention.key_lengths(causal, 3, 5) is None


def test_groups_cover_every_sequence_in_order_within_the_budget():
    lengths = [200, 190, 64, 64, 60, 12, 12, 11, 3]
    heads, budget = 12, 1 << 20
    spans = list(attention.groups(lengths, heads, budget))
    assert [i for start, stop, _ in spans for i in range(start, stop)] == list(range(len(lengths)))
    for start, stop, longest in spans:
        assert longest == max(lengths[start:stop])
        if stop - start > 1:
            assert (stop - start) * heads * longest**2 * 4 <= budget
    assert spans[0] == (0, 1, 200)  # a 200-token sequence's scores alone exceed 1 MiB
    assert any(stop - start > 2 for start, stop, _ in spans)  # short ones share a group


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matches_sdpa_on_every_real_position(dtype):
    torch.manual_seed(0)
    # Long sequences (one per group) and short ones of mixed lengths (several per group,
    # so the in-group padding mask is exercised), sorted as the engine's batches are.
    lengths = [40, 37, 9, 8, 8, 6, 3, 1]
    batch, heads, length, head_dim = len(lengths), 4, 40, 8
    q, k, v = (torch.randn(batch, length, heads, head_dim).to(dtype).transpose(1, 2) for _ in "qkv")
    mask = padding_mask(lengths, length)
    with torch.inference_mode():
        ours, weights = attention.small_head_attention(Module(), q, k, v, mask)
        ref = sdpa_reference(q.float(), k.float(), v.float(), mask)
    assert weights is None and ours.shape == (batch, length, heads, head_dim)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    for i, n in enumerate(lengths):
        torch.testing.assert_close(ours[i, :n].float(), ref[i, :n], atol=tolerance, rtol=0)
    assert torch.isfinite(ours).all()  # padded positions: zero or attention over real keys


def test_group_budget_does_not_change_the_result(monkeypatch):
    torch.manual_seed(1)
    lengths = [16, 15, 15, 7, 2]
    q, k, v = (torch.randn(5, 4, 16, 8) for _ in "qkv")
    mask = padding_mask(lengths, 16)
    with torch.inference_mode():
        grouped, _ = attention.small_head_attention(Module(), q, k, v, mask)
        monkeypatch.setattr(attention, "GROUP_SCORE_BYTES", 1)  # every sequence alone
        alone, _ = attention.small_head_attention(Module(), q, k, v, mask)
    for i, n in enumerate(lengths):
        torch.testing.assert_close(grouped[i, :n], alone[i, :n], atol=1e-6, rtol=0)


def test_anything_but_right_padding_goes_to_sdpa_unchanged():
    torch.manual_seed(2)
    q, k, v = (torch.randn(3, 2, 6, 4) for _ in "qkv")
    mask = padding_mask([6, 4, 2], 6, left=True)
    with torch.inference_mode():
        ours, _ = attention.small_head_attention(Module(), q, k, v, mask)
        ref = sdpa_reference(q, k, v, mask)
    torch.testing.assert_close(ours, ref, atol=0, rtol=0)


def test_the_cpu_encoder_uses_it_and_embeds_as_sdpa_does(tiny_embedder_path):
    from corpusmill.engine.encoder import TransformerEncoder
    from corpusmill.engine.runner import collate

    enc = TransformerEncoder(tiny_embedder_path, device="cpu", dtype="float32")
    assert enc.attention == attention.NAME
    texts = ["a short one", "a somewhat longer text about proteins and cells " * 3, "x"]
    batch = collate(enc.tokenize(texts), enc.pad_id)
    ours = enc.forward(batch)
    enc.model.set_attn_implementation("sdpa")
    ref = enc.forward(batch)
    cosine = (ours * ref).sum(axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    assert cosine.min() >= 0.99999


def test_a_compiled_encoder_keeps_sdpa(tiny_embedder_path, monkeypatch):
    from corpusmill.engine import encoder

    monkeypatch.setattr(encoder, "compile_model", lambda model: model)
    enc = encoder.TransformerEncoder(tiny_embedder_path, device="cpu", compile=True)
    assert enc.attention == "sdpa"
