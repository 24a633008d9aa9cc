"""The packed BERT forward (corpusmill/model/bert_cpu.py) and the probe that picks it
(corpusmill/model/probe.py): the same vectors and logits as Transformers' float32 model,
packed batches, every pooling mode, a poisoned input kept to itself, the probe's cache, its
refusal of a forward that moves vectors, and the choice recorded in the lineage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from corpusmill.engine.inputs import collate_packed
from corpusmill.engine.runner import BatchEngine
from corpusmill.errors import ConfigError
from corpusmill.model import bert_cpu, packed_linear, probe
from corpusmill.model.card import PoolingSpec
from corpusmill.model.encoder import TransformerEncoder
from corpusmill.model.pooling import pool, pool_packed
from tests.texts import MIXED_TEXTS
from tests.vectors import cosine_rows
from tools.tiny_models import save_tiny_embedder, write_pooling_files

# The dtypes this CPU runs the packed forward in: float32 on every CPU, bf16 where oneDNN
# has it (the default on such a CPU).
DTYPES = ["float32"] + (["bfloat16"] if packed_linear.supported(torch.bfloat16) else [])
each_dtype = pytest.mark.parametrize("dtype", DTYPES)
# Mixed lengths, and runs of equal ones (one sequence length shared by many inputs).
TEXTS = MIXED_TEXTS + ["Same length text here."] * 7 + ["x"] + MIXED_TEXTS[::-1]


def _every_weight_random(path):
    """A freshly initialised BERT has zero biases and unit LayerNorm scales: a forward
    that dropped a bias or a LayerNorm's affine would still match it. Here every one of
    them is random too (saved back into the same folder)."""
    from transformers import BertModel

    model = BertModel.from_pretrained(path)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                param.add_(0.2 * torch.randn(param.shape, generator=gen))
    model.save_pretrained(path, safe_serialization=True)
    return path


def _rows(enc: TransformerEncoder, texts=TEXTS) -> np.ndarray:
    rows, stats = BatchEngine(enc, max_batch_tokens=512, inline_items=0).encode(texts)
    assert not stats.failed
    return rows


def test_packed_collate_puts_sequences_end_to_end():
    toks = [{"input_ids": [5, 6, 7]}, {"input_ids": [8]}, {"input_ids": [9, 10]}]
    batch = collate_packed(toks)
    assert batch["input_ids"].tolist() == [5, 6, 7, 8, 9, 10]
    assert batch["position_ids"].tolist() == [0, 1, 2, 0, 0, 1]
    assert batch["lengths"].tolist() == [3, 1, 2]
    assert "token_type_ids" not in batch
    typed = collate_packed([{"input_ids": [1, 2], "token_type_ids": [0, 1]}])
    assert typed["token_type_ids"].tolist() == [0, 1]


@pytest.mark.parametrize("mode", ["mean", "cls", "max", "lasttoken"])
def test_packed_pooling_equals_padded_pooling(mode):
    torch.manual_seed(0)
    lengths = [5, 1, 3]
    padded = torch.randn(3, 5, 8)
    mask = (torch.arange(5)[None, :] < torch.tensor(lengths)[:, None]).long()
    packed = torch.cat([padded[i, :n] for i, n in enumerate(lengths)])
    spec = PoolingSpec(mode, normalize=True)
    want = pool(padded, mask, spec)
    got = pool_packed(packed, torch.tensor(lengths), spec)
    torch.testing.assert_close(got, want)


@each_dtype
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_bert_cpu_gives_float32_vectors(tmp_path, pooling, dtype):
    path = _every_weight_random(save_tiny_embedder(tmp_path / "m", seed=4))
    write_pooling_files(path, pooling=pooling)
    fp32 = _rows(TransformerEncoder(path, dtype="float32", forward="transformers"))
    enc = TransformerEncoder(path, dtype=dtype, forward="bert_cpu")
    assert enc.forward_path == "bert_cpu" and enc.packed_batches
    ours = _rows(enc)
    hf = _rows(TransformerEncoder(path, dtype=dtype, forward="transformers"))
    # in float32 only the order of the sums differs; bf16 rounds every product's inputs
    assert cosine_rows(ours, fp32).min() >= (0.99999 if dtype == "float32" else 0.999)
    # as close to float32 as Transformers' own path in that dtype, give or take rounding
    assert cosine_rows(ours, fp32).min() >= cosine_rows(hf, fp32).min() - 5e-4
    assert not np.array_equal(ours, hf)  # really another forward


@each_dtype
def test_attention_groups_cut_a_long_run_into_parts_with_the_same_rows(
    tmp_path, monkeypatch, dtype
):
    path = save_tiny_embedder(tmp_path / "m", seed=5)
    enc = TransformerEncoder(path, dtype=dtype, forward="bert_cpu")
    whole = _rows(enc)
    monkeypatch.setattr(bert_cpu, "SCORES_PER_GROUP", 50)  # a group of one head each
    np.testing.assert_allclose(_rows(enc), whole, atol=1e-6)


@each_dtype
def test_bert_cpu_cross_encoder_logits_match_float32(tiny_cross_encoder_path, dtype):
    pairs = [(a, b) for a in MIXED_TEXTS[:3] for b in MIXED_TEXTS[2:]]
    kw = {"kind": "cross-encoder"}
    reference = TransformerEncoder(
        tiny_cross_encoder_path, dtype="float32", forward="transformers", **kw
    )
    fp32 = _rows(reference, pairs)
    enc = TransformerEncoder(tiny_cross_encoder_path, dtype=dtype, forward="bert_cpu", **kw)
    ours = _rows(enc, pairs)
    assert ours.shape == fp32.shape == (len(pairs), 1)
    tolerance = 1e-4 if dtype == "float32" else 0.02
    np.testing.assert_allclose(ours, fp32, atol=tolerance * float(np.abs(fp32).max()))


@each_dtype
def test_the_probe_runs_for_a_cross_encoder_on_pairs(tiny_cross_encoder_path, tmp_path, dtype):
    enc = TransformerEncoder(
        tiny_cross_encoder_path, kind="cross-encoder", dtype=dtype, cache_dir=str(tmp_path)
    )
    assert enc.forward_reason.startswith("probe: ")
    assert enc.probe["tokens"] > 1000  # its speed batch: query-passage pairs


@each_dtype
def test_a_poisoned_input_spoils_only_its_own_row(tmp_path, dtype):
    path = save_tiny_embedder(tmp_path / "m", seed=0, poison_token="zebra")
    enc = TransformerEncoder(path, dtype=dtype, forward="bert_cpu")
    texts = ["a zebra here", *MIXED_TEXTS, "another zebra"]
    rows, _ = BatchEngine(enc, max_batch_tokens=4096).encode(texts)
    bad = ~np.isfinite(rows).all(axis=1)
    assert bad.tolist() == [True] + [False] * len(MIXED_TEXTS) + [True]


def test_a_forward_that_cannot_run_is_refused_when_forced_and_skipped_when_auto(
    tiny_embedder_path,
):
    plain = {"dtype": "float32", "pack_linear": False}  # the packed forward packs
    with pytest.raises(ConfigError, match="CORPUSMILL_FORWARD=bert_cpu"):
        TransformerEncoder(tiny_embedder_path, forward="bert_cpu", **plain)
    enc = TransformerEncoder(tiny_embedder_path, **plain)
    assert enc.forward_path == "transformers" and "PACK_LINEAR=0" in enc.forward_reason
    with pytest.raises(ConfigError, match="CORPUSMILL_FORWARD"):
        TransformerEncoder(tiny_embedder_path, forward="fastest")


@each_dtype
def test_the_probe_is_cached_per_machine_and_model(
    tmp_path, tiny_embedder_path, monkeypatch, dtype
):
    first = TransformerEncoder(tiny_embedder_path, dtype=dtype, cache_dir=str(tmp_path))
    (cached,) = (tmp_path / "forward-probe").glob("*.json")
    assert first.forward_reason.startswith("probe: ")
    assert set(first.probe["tokens_per_s"]) == {"bert_cpu", "transformers"}

    def no_probe(*_a, **_k):
        raise AssertionError("the cached result should have been used")

    monkeypatch.setattr(probe, "time_paths", no_probe)
    again = TransformerEncoder(tiny_embedder_path, dtype=dtype, cache_dir=str(tmp_path))
    assert (again.forward_path, again.forward_reason) == (first.forward_path, first.forward_reason)
    # another thread count is another machine as far as speed goes: probed afresh
    with pytest.raises(AssertionError, match="cached result"):
        TransformerEncoder(
            tiny_embedder_path, dtype=dtype, cache_dir=str(tmp_path), probe_threads=2
        )
    assert len(list(cached.parent.glob("*.json"))) == 1


@each_dtype
@pytest.mark.parametrize("faster", ["bert_cpu", "transformers"])
def test_the_probe_keeps_the_faster_forward(tiny_embedder_path, monkeypatch, faster, dtype):
    """The timing is replaced (labelled: a FAKE clock, 1 s against 3 s per call); the
    choice, the packed batches that go with it and the reason follow the faster one."""
    monkeypatch.setattr(
        probe,
        "time_paths",
        lambda forwards, threads: {n: 1.0 if n == faster else 3.0 for n in forwards},
    )
    enc = TransformerEncoder(tiny_embedder_path, dtype=dtype)
    assert enc.forward_path == faster
    assert enc.packed_batches == (faster == "bert_cpu")
    assert enc.forward_reason.startswith("probe: bert_cpu")
    assert ("(3.00x)" if faster == "bert_cpu" else "(0.33x)") in enc.forward_reason


@each_dtype
@pytest.mark.parametrize(
    ("transformers_s", "kept"), [(1.0, "bert_cpu"), (0.95, "bert_cpu"), (0.85, "transformers")]
)
def test_a_near_tie_keeps_bert_cpu(tiny_embedder_path, monkeypatch, transformers_s, kept, dtype):
    """FAKE clock again: Transformers' forward must win by the margin (1.10x) to be kept;
    5% faster is a tie, which goes to the forward that loads without its modeling code."""
    monkeypatch.setattr(
        probe,
        "time_paths",
        lambda forwards, threads: {"bert_cpu": 1.0, "transformers": transformers_s},
    )
    enc = TransformerEncoder(tiny_embedder_path, dtype=dtype)
    assert enc.forward_path == kept
    assert ("margin" in enc.forward_reason) == (transformers_s == 0.95)


@each_dtype
def test_the_probe_refuses_a_forward_that_moves_vectors(tiny_embedder_path, monkeypatch, dtype):
    real = bert_cpu.BertCpuForward.__call__

    def drifting(self, batch):
        hidden = real(self, batch)
        return hidden + 0.5 * torch.randn_like(hidden)

    monkeypatch.setattr(bert_cpu.BertCpuForward, "__call__", drifting)
    enc = TransformerEncoder(tiny_embedder_path, dtype=dtype)
    assert enc.forward_path == "transformers"
    assert "moved a vector" in enc.forward_reason


@each_dtype
def test_lineage_records_the_forward_and_why(tiny_embedder_path, tmp_path, dtype):
    from corpusmill.model import Model, ModelSpec

    spec = ModelSpec(path=str(tiny_embedder_path), dtype=dtype, cache_dir=str(tmp_path))
    forced = Model(spec.with_(forward="transformers")).load().lineage()
    assert forced["forward_path"] == "transformers"
    assert forced["forward_reason"] == "forced by CORPUSMILL_FORWARD=transformers"
    auto = Model(spec).load().lineage()
    assert auto["forward_path"] in ("bert_cpu", "transformers")
    assert auto["forward_reason"].startswith("probe: ")
    assert auto["forward_streams"] >= 1 and auto["threads_per_stream"] >= 1


@each_dtype
def test_the_environment_forces_the_forward_and_the_streams(tiny_embedder_path, monkeypatch, dtype):
    from corpusmill.config import Settings
    from corpusmill.model import Model

    monkeypatch.setenv("CORPUSMILL_MODEL", str(tiny_embedder_path))
    monkeypatch.setenv("CORPUSMILL_DTYPE", dtype)
    monkeypatch.setenv("CORPUSMILL_CACHE_DIR", "")
    # Two torch threads to share out, whatever an earlier test in this process left set (a
    # Ray worker run in-process sets its own count, as it would in its own process).
    import torch

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    for forward, streams in (("transformers", "1"), ("bert_cpu", "2")):
        monkeypatch.setenv("CORPUSMILL_FORWARD", forward.upper())
        monkeypatch.setenv("CORPUSMILL_CPU_STREAMS", streams)
        lineage = Model(Settings.from_env().embedder_spec()).load().lineage()
        assert lineage["forward_path"] == forward
        assert lineage["forward_reason"] == f"forced by CORPUSMILL_FORWARD={forward}"
        assert lineage["forward_streams"] == int(streams)


@pytest.mark.slow  # the real MiniLM over SciFact-like text
@each_dtype
def test_minilm_bert_cpu_keeps_every_vector_at_float32(minilm_path, dtype):
    from tests.unit.test_precision import corpus_texts

    ref = TransformerEncoder(minilm_path, dtype="float32", forward="transformers")
    texts = corpus_texts(ref.tokenizer, ref.max_seq_length)
    fp32, _ = BatchEngine(ref, max_batch_tokens=4096).encode(texts)
    enc = TransformerEncoder(minilm_path, dtype=dtype, forward="bert_cpu")
    rows, stats = BatchEngine(enc, max_batch_tokens=4096, streams=2).encode(texts)
    # packed: no padded token, only the few zero rows of `padded_rows`
    assert 0 < stats.padding_fraction <= 1 / 32
    assert cosine_rows(rows, fp32).min() >= 0.9999


def test_the_default_path_keeps_minilm_at_float32_for_a_few_texts(minilm_path, tmp_path):
    """The packaged MiniLM as a run loads it by default (the probe picks the forward, CPU
    streams): every vector at cosine >= 0.999 to Transformers' float32 forward, and the
    packed forward itself (forced) at the same bar."""
    from corpusmill.config import Settings
    from corpusmill.model import Model

    ref = TransformerEncoder(minilm_path, dtype="float32", forward="transformers")
    texts = [*MIXED_TEXTS, "naïve café — ünïcode", " ".join(MIXED_TEXTS * 8)]
    fp32, _ = BatchEngine(ref, max_batch_tokens=4096).encode(texts)
    spec = Settings().embedder_spec().with_(path=str(minilm_path), cache_dir=str(tmp_path))
    for forward in ("auto", "bert_cpu"):
        model = Model(spec.with_(forward=forward)).load()
        rows, _ = model.encode(texts)
        assert cosine_rows(rows, fp32).min() >= 0.999, model.lineage()["forward_path"]
    assert model.lineage()["forward_path"] == "bert_cpu"


def test_row_counts_are_padded_to_one_in_each_32nd_of_a_doubling():
    for low in (64, 128, 2048):
        counts = {bert_cpu.padded_rows(n) for n in range(low, 2 * low)}
        assert len(counts) == 33  # 32 steps, and the doubling itself
        assert all(n <= bert_cpu.padded_rows(n) <= n + n // 32 for n in range(low, 2 * low))
    assert [bert_cpu.padded_rows(n) for n in (1, 17, 63, 64)] == [1, 17, 63, 64]


@each_dtype
def test_the_products_run_on_padded_rows_and_the_vectors_ignore_them(tmp_path, monkeypatch, dtype):
    path = _every_weight_random(save_tiny_embedder(tmp_path / "m", seed=6))
    enc = TransformerEncoder(path, dtype=dtype, forward="bert_cpu")
    seen: list[int] = []
    real_call = bert_cpu._Linear.__call__

    def spy(self, x, post="none"):
        seen.append(x.shape[0])
        return real_call(self, x, post)

    monkeypatch.setattr(bert_cpu._Linear, "__call__", spy)
    padded_rows = bert_cpu.padded_rows
    padded, stats = BatchEngine(enc, max_batch_tokens=512, inline_items=0).encode(TEXTS)
    assert seen and all(padded_rows(n) == n for n in seen)
    # the padding the engine reports is the rows computed beyond the tokens: four products
    # a layer, each on the batch's padded rows
    assert stats.padded_tokens * 4 * len(enc._bert_cpu.layers) == sum(seen)
    assert stats.padded_tokens > stats.real_tokens
    monkeypatch.setattr(bert_cpu, "padded_rows", lambda rows: rows)
    seen.clear()
    unpadded = _rows(enc)
    assert any(padded_rows(n) != n for n in seen)  # these batches did need padding
    np.testing.assert_allclose(padded, unpadded, atol=1e-6)
