"""Linear layers on oneDNN-packed weights (CPU, bf16): the same products as `F.linear`,
the same vectors from the encoder, and a plain layer wherever packing would differ."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from corpusmill.engine.runner import BatchEngine
from corpusmill.model import packed_linear
from corpusmill.model.encoder import TransformerEncoder
from corpusmill.model.packed_linear import PackedLinear, pack_linear, pack_linear_layers
from tests.texts import MIXED_TEXTS
from tests.vectors import cosine_rows

needs_onednn_bf16 = pytest.mark.skipif(
    not packed_linear.supported(torch.bfloat16), reason="no oneDNN bf16 on this CPU"
)


def _linear(n_in: int, n_out: int, bias: bool) -> torch.nn.Linear:
    torch.manual_seed(3)
    return torch.nn.Linear(n_in, n_out, bias=bias).to(torch.bfloat16)


@needs_onednn_bf16
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 48), (3, 7, 48), (5000, 48)])
def test_packed_product_equals_f_linear(shape, bias):
    """Any leading shape, row counts below and above the packing hint, float32 input cast
    to bf16 on the way in (as autocast does for F.linear)."""
    linear = _linear(48, 80, bias)
    x = torch.randn(*shape)
    with torch.inference_mode():
        want = F.linear(x.to(torch.bfloat16), linear.weight, linear.bias)
        got = pack_linear(linear)(x)
    assert got.shape == (*shape[:-1], 80) and got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want.float(), rtol=1e-2, atol=1e-2)


@needs_onednn_bf16
@pytest.mark.parametrize("kind", ["embedder", "cross-encoder"])
def test_encoder_packs_every_linear_and_keeps_its_outputs(
    kind, tiny_embedder_path, tiny_cross_encoder_path
):
    path = tiny_embedder_path if kind == "embedder" else tiny_cross_encoder_path
    # Transformers' forward, whose Linear layers this packs (model/bert_cpu.py packs its own)
    hf = {"kind": kind, "device": "cpu", "dtype": "bfloat16", "forward": "transformers"}
    packed = TransformerEncoder(path, **hf)
    plain = TransformerEncoder(path, **hf, pack_linear=False)
    assert packed.linear_kernel == "onednn_packed" and plain.linear_kernel == "aten"
    n_plain = sum(isinstance(m, torch.nn.Linear) for m in plain.model.modules())
    assert n_plain > 0
    assert not any(isinstance(m, torch.nn.Linear) for m in packed.model.modules())
    assert sum(isinstance(m, PackedLinear) for m in packed.model.modules()) == n_plain

    items = MIXED_TEXTS if kind == "embedder" else [(t, MIXED_TEXTS[0]) for t in MIXED_TEXTS]
    got, _ = BatchEngine(packed).encode(items)
    want, _ = BatchEngine(plain).encode(items)
    if kind == "embedder":
        assert cosine_rows(got, want).min() >= 0.99999
    else:
        np.testing.assert_allclose(got, want, atol=2e-2)


def test_float32_and_opt_out_keep_plain_linear_layers(tiny_embedder_path):
    for enc in (
        TransformerEncoder(
            tiny_embedder_path, device="cpu", dtype="float32", forward="transformers"
        ),
        TransformerEncoder(tiny_embedder_path, device="cpu", dtype="bfloat16", pack_linear=False),
    ):
        assert enc.linear_kernel == "aten"
        assert not any(isinstance(m, PackedLinear) for m in enc.model.modules())


@needs_onednn_bf16
def test_a_layer_whose_packed_product_differs_stays_plain(monkeypatch, tiny_embedder_path):
    """The probe is what protects the vectors if a torch build packs differently: a packed
    product that disagrees with F.linear is refused and the layer keeps F.linear."""
    hf = {"device": "cpu", "dtype": "bfloat16", "forward": "transformers"}
    reference = TransformerEncoder(tiny_embedder_path, **hf)
    want, _ = BatchEngine(reference).encode(MIXED_TEXTS)

    real_forward = PackedLinear.forward
    monkeypatch.setattr(PackedLinear, "forward", lambda self, x: real_forward(self, x) * 1.01)
    model = torch.nn.Sequential(_linear(16, 8, True))
    assert pack_linear_layers(model) == 0 and isinstance(model[0], torch.nn.Linear)

    enc = TransformerEncoder(tiny_embedder_path, **hf)
    assert enc.linear_kernel == "aten"
    got, _ = BatchEngine(enc).encode(MIXED_TEXTS)
    assert cosine_rows(got, want).min() >= 0.99999


def test_model_lineage_reports_the_linear_kernel(tiny_embedder_path):
    from corpusmill.model import Model, ModelSpec

    spec = ModelSpec(path=str(tiny_embedder_path), dtype="bfloat16")
    res = Model(spec.with_(pack_linear=False)).load()
    assert res.lineage()["linear_kernel"] == "aten"
    res = Model(spec).load()
    expected = "onednn_packed" if packed_linear.supported(torch.bfloat16) else "aten"
    assert res.lineage()["linear_kernel"] == expected


def test_pack_linear_setting_reads_the_environment(monkeypatch):
    from corpusmill.config import Settings

    monkeypatch.delenv("CORPUSMILL_PACK_LINEAR", raising=False)
    assert Settings.from_env().pack_linear is True
    monkeypatch.setenv("CORPUSMILL_PACK_LINEAR", "0")
    assert Settings.from_env().pack_linear is False
