"""The int8 path (`CORPUSMILL_DTYPE=int8`): int8 products close to `F.linear`, the layers it
swaps and the ones it keeps, refusal where it cannot run, and lineage saying int8."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from corpusmill.engine.runner import BatchEngine
from corpusmill.errors import ConfigError
from corpusmill.model import hardware, int8_linear
from corpusmill.model.encoder import TransformerEncoder
from corpusmill.model.int8_linear import FusedQKV, Int8Linear, QKVPart
from tests.texts import MIXED_TEXTS
from tests.vectors import cosine_rows

needs_int8 = pytest.mark.skipif(
    not (hardware.cpu_supports_int8() and int8_linear.supported()),
    reason="no VNNI/AMX or no oneDNN int8 ops",
)


def _linear(n_in: int, n_out: int, bias: bool = True) -> torch.nn.Linear:
    torch.manual_seed(3)
    return torch.nn.Linear(n_in, n_out, bias=bias)


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want).norm() / want.norm())


@needs_int8
@pytest.mark.parametrize("gelu", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 48), (3, 7, 48), (5000, 48)])
def test_int8_product_is_close_to_f_linear(shape, bias, gelu):
    """Any leading shape, rows below and above the packing hint, bf16 or float32 input:
    within int8 rounding (~1%) of the float32 product, bf16 out."""
    linear = _linear(48, 80, bias)
    layer = Int8Linear(linear.weight, linear.bias, gelu=gelu)
    x = torch.randn(*shape)
    with torch.inference_mode():
        want = F.linear(x, linear.weight, linear.bias)
        want = F.gelu(want) if gelu else want
        for inp in (x, x.to(torch.bfloat16)):
            got = layer(inp)
            assert got.shape == (*shape[:-1], 80) and got.dtype == torch.bfloat16
            assert _rel(got, want) < 0.02


@needs_int8
def test_fused_qkv_gives_each_projection_its_own_slice():
    q, k, v = _linear(32, 32), _linear(32, 16), _linear(32, 32)
    torch.manual_seed(4)
    for m in (q, k, v):
        torch.nn.init.normal_(m.weight, std=0.2)
    fused = FusedQKV(q, k, v)
    parts = [QKVPart(fused, i) for i in range(3)]
    x = torch.randn(2, 5, 32)
    with torch.inference_mode():
        for linear, part in zip((q, k, v), parts, strict=True):
            assert _rel(part(x), linear(x)) < 0.02
        # a new input is a new product, not the cached one, even before the value slice
        y, z = torch.randn(2, 5, 32), torch.randn(2, 5, 32)
        assert _rel(parts[0](y), q(y)) < 0.02
        assert _rel(parts[1](z), k(z)) < 0.02


@needs_int8
@pytest.mark.parametrize("kind", ["embedder", "cross-encoder"])
def test_int8_encoder_swaps_qkv_and_ffn_up_keeps_the_rest_in_bf16(
    kind, tiny_embedder_path, tiny_cross_encoder_path
):
    path = tiny_embedder_path if kind == "embedder" else tiny_cross_encoder_path
    enc = TransformerEncoder(path, kind=kind, device="cpu", dtype="int8")
    ref = TransformerEncoder(path, kind=kind, device="cpu", dtype="float32")
    assert enc.dtype_name == "int8" and enc.torch_dtype == torch.bfloat16
    n_layers = ref.model.config.num_hidden_layers
    assert enc.int8_layers == 4 * n_layers
    base = enc.model.base_model
    for layer in base.encoder.layer:
        assert isinstance(layer.attention.self.query, QKVPart)
        assert isinstance(layer.intermediate.dense, Int8Linear) and layer.intermediate.dense.gelu
        assert isinstance(layer.intermediate.intermediate_act_fn, torch.nn.Identity)
        # the down-projection after GELU (its outliers cost quality in int8) and the
        # attention output (slower in int8) stay bf16
        assert not isinstance(layer.output.dense, Int8Linear)
        assert not isinstance(layer.attention.output.dense, Int8Linear)
    items = MIXED_TEXTS if kind == "embedder" else [(t, MIXED_TEXTS[0]) for t in MIXED_TEXTS]
    got, stats = BatchEngine(enc).encode(items)
    want, _ = BatchEngine(ref).encode(items)
    assert not stats.failed
    if kind == "embedder":
        assert cosine_rows(got, want).min() >= 0.99
    else:
        assert abs(got - want).max() < 0.1


@needs_int8
def test_an_int8_layer_that_misses_its_probe_refuses_to_load(monkeypatch, tiny_embedder_path):
    """The probe is what protects the vectors if a torch build computes differently."""
    real_forward = Int8Linear.forward
    monkeypatch.setattr(Int8Linear, "forward", lambda self, x: real_forward(self, x) * 1.1)
    with pytest.raises(ConfigError, match="CORPUSMILL_DTYPE=auto"):
        TransformerEncoder(tiny_embedder_path, device="cpu", dtype="int8")


def test_int8_is_refused_without_vnni_on_a_gpu_or_compiled(monkeypatch, tiny_embedder_path):
    monkeypatch.setattr(hardware, "cpu_supports_int8", lambda: False)
    with pytest.raises(ConfigError, match="VNNI.*CORPUSMILL_DTYPE=auto"):
        hardware.resolve_dtype("int8", "cpu")
    with pytest.raises(ConfigError, match="VNNI"):
        TransformerEncoder(tiny_embedder_path, device="cpu", dtype="int8")
    monkeypatch.setattr(hardware, "cpu_supports_int8", lambda: True)
    with pytest.raises(ConfigError, match="CPU only"):
        hardware.resolve_dtype("int8", "cuda")
    if int8_linear.supported():
        with pytest.raises(ConfigError, match="CORPUSMILL_COMPILE"):
            TransformerEncoder(tiny_embedder_path, device="cpu", dtype="int8", compile=True)


def test_int8_is_refused_by_a_torch_without_the_int8_ops(monkeypatch):
    """torch 2.13 deprecates `quantize_per_tensor_dynamic`: a torch without it (or without
    oneDNN's qlinear ops) gets a ConfigError that names the fix, not a crash mid-run."""
    monkeypatch.setattr(hardware, "cpu_supports_int8", lambda: True)
    monkeypatch.setattr(int8_linear, "supported", lambda: False)
    with pytest.raises(ConfigError, match="qlinear_pointwise.*CORPUSMILL_DTYPE=auto"):
        hardware.resolve_dtype("int8", "cpu")


@needs_int8
def test_dtype_setting_int8_reaches_lineage(monkeypatch, tiny_embedder_path):
    from corpusmill.config import Settings
    from corpusmill.model import Model

    monkeypatch.setenv("CORPUSMILL_DTYPE", "int8")
    monkeypatch.setenv("CORPUSMILL_DEVICE", "cpu")
    monkeypatch.setenv("CORPUSMILL_MODEL", str(tiny_embedder_path))
    model = Model(Settings.from_env().embedder_spec())
    assert model.lineage()["dtype"] == "int8"  # before the weights load
    meta = model.load().lineage()
    assert meta["dtype"] == "int8" and meta["int8_linear_layers"] == 8
    monkeypatch.setenv("CORPUSMILL_DTYPE", "bfloat16")
    meta = Model(Settings.from_env().embedder_spec()).load().lineage()
    assert meta["dtype"] == "bfloat16" and meta["int8_linear_layers"] == 0
