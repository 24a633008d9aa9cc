"""The real encoder and engine on tiny saved models and on the packaged MiniLM."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from corpusmill.engine.runner import BatchEngine, TokenIds
from corpusmill.engine.telemetry import GpuSampler
from corpusmill.model.encoder import TransformerEncoder
from corpusmill.model.hardware import cpu_supports_bf16
from tests.texts import MIXED_TEXTS
from tests.vectors import cosine_rows


def test_tiny_embedder_vectors_are_normalised_and_ordered(tiny_embedder_path):
    enc = TransformerEncoder(tiny_embedder_path, dtype="float32")
    assert enc.card.dimension == 32 and enc.max_seq_length == 64
    rows, stats = BatchEngine(enc, max_batch_tokens=64).encode(MIXED_TEXTS)
    assert rows.shape == (5, 32)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    single = np.stack([BatchEngine(enc).encode([t])[0][0] for t in MIXED_TEXTS])
    assert cosine_rows(rows, single).min() > 0.9999
    assert stats.batches >= 2 and stats.real_tokens > 0


def test_several_tokenising_threads_give_the_same_rows_in_the_same_order(tiny_embedder_path):
    enc = TransformerEncoder(tiny_embedder_path, dtype="float32")
    texts = [f"{i} " + MIXED_TEXTS[i % len(MIXED_TEXTS)] for i in range(1500)]
    one, _ = BatchEngine(enc, max_batch_tokens=512, window=700).encode(texts)
    four, stats = BatchEngine(enc, max_batch_tokens=512, window=700, tokenize_threads=4).encode(
        texts
    )
    assert stats.items == 1500 and not stats.failed
    np.testing.assert_array_equal(one, four)


@pytest.mark.slow  # 5 threads x 30 rounds of 64 long texts: a race needs the volume
def test_tokenize_is_safe_while_other_threads_use_the_tokenizer(tiny_embedder_path):
    """The chunker calls the same tokenizer without truncation; a shared Rust tokenizer
    switched between settings by two threads fails with "Already borrowed"."""
    import threading

    enc = TransformerEncoder(tiny_embedder_path, dtype="float32")
    texts = [" ".join(["word"] * 300)] * 64
    expected = enc.tokenize(texts)
    errors: list[BaseException] = []

    def tokenise() -> None:
        try:
            for _ in range(30):
                assert enc.tokenize(texts) == expected
        except BaseException as exc:
            errors.append(exc)

    def chunk() -> None:
        try:
            for _ in range(30):
                enc.tokenizer(texts, add_special_tokens=False, truncation=False)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=tokenise) for _ in range(3)]
    threads += [threading.Thread(target=chunk) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_tiny_models_see_real_tokens_not_unknowns(tiny_embedder_path):
    """transformers 5 ignores BertTokenizerFast(vocab_file=...): every word became [UNK]."""
    enc = TransformerEncoder(tiny_embedder_path, dtype="float32")
    ids = enc.tokenize(["protein folding in cells"])[0]["input_ids"]
    assert enc.tokenizer.unk_token_id not in ids and len(ids) == 6
    rows, _ = BatchEngine(enc).encode(["protein folding", "stock market"])
    assert (rows[0] * rows[1]).sum() < 0.999


def test_tiny_cross_encoder_gives_one_logit_per_pair(tiny_cross_encoder_path):
    enc = TransformerEncoder(tiny_cross_encoder_path, kind="cross-encoder", dtype="float32")
    pairs = [("what is ATP", t) for t in MIXED_TEXTS]
    logits, _ = BatchEngine(enc, max_batch_tokens=64).encode(pairs)
    alone = np.array([BatchEngine(enc).encode([p])[0][0, 0] for p in pairs])
    assert logits.shape == (5, 1)
    np.testing.assert_allclose(logits[:, 0], alone, atol=1e-4)


@pytest.mark.skipif(not cpu_supports_bf16(), reason="CPU has no native bf16")
def test_bf16_casts_linear_weights_once_and_keeps_norms_in_float32(tiny_embedder_path):
    import torch

    # pack_linear=False keeps the nn.Linear modules to look at (test_packed_linear.py
    # covers the packed ones, which are built from these same bf16 weights)
    enc = TransformerEncoder(tiny_embedder_path, dtype="bfloat16", pack_linear=False)
    linear = [m for m in enc.model.modules() if isinstance(m, torch.nn.Linear)]
    norms = [m for m in enc.model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert linear and all(m.weight.dtype == torch.bfloat16 for m in linear)
    assert norms and all(m.weight.dtype == torch.float32 for m in norms)
    assert enc.model.embeddings.word_embeddings.weight.dtype == torch.float32


@pytest.mark.slow  # the real MiniLM
@pytest.mark.parametrize("dtype", ["float32", "auto"])
def test_batch_invariance_on_minilm(minilm_path, dtype):
    """A text embedded alone and inside a batch of mixed lengths gives the same vector."""
    enc = TransformerEncoder(minilm_path, dtype=dtype)
    engine = BatchEngine(enc, max_batch_tokens=4096)
    batched, stats = engine.encode(MIXED_TEXTS)
    alone = np.stack([engine.encode([t])[0][0] for t in MIXED_TEXTS])
    assert stats.batches == 1  # all five share one padded batch
    assert cosine_rows(batched, alone).min() >= 0.9999


@pytest.mark.slow  # the real MiniLM, twice (ours and the sentence-transformers reference)
def test_engine_matches_sentence_transformers(minilm_path):
    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(str(minilm_path), device="cpu").encode(MIXED_TEXTS)
    ours, _ = BatchEngine(TransformerEncoder(minilm_path, dtype="float32")).encode(MIXED_TEXTS)
    assert cosine_rows(ours, reference).min() >= 0.99999


def test_model_loads_its_weights_on_first_use_and_only_once(tiny_embedder_path):
    from corpusmill.model import LOADS, Model, ModelSpec

    before = LOADS["embedder"]
    model = Model(ModelSpec(path=str(tiny_embedder_path), dtype="float32"))
    # The card, the sequence limit and the tokenizer come from the files: no weights.
    assert model.card.dimension == 32 and model.max_seq_length == 64
    assert model.tokenizer_id and model.tokenizer("hello")["input_ids"]
    assert not model.loaded and LOADS["embedder"] == before
    assert model.lineage()["weights_loaded"] is False
    assert model.embed(["hello"]).shape == (1, 32)
    assert model.embed(["hello", "world"] * 100).shape == (200, 32)  # through the engine
    assert model.loaded and LOADS["embedder"] == before + 1
    assert model.lineage()["weights_loaded"] is True
    model.release()
    assert not model.loaded


def test_model_embed_has_one_forward_path_the_engine(tiny_embedder_path, monkeypatch):
    """A single query goes through `BatchEngine.run` like a partition does (the engine runs
    it in the calling thread), so the OOM back-off and failed-row rules apply to it too."""
    from corpusmill.model import Model, ModelSpec

    model = Model(ModelSpec(path=str(tiny_embedder_path), dtype="float32")).load()
    runs: list[int] = []
    real_run = BatchEngine.run

    def counted(self, items, *args, **kwargs):
        items = list(items)
        runs.append(len(items))
        return real_run(self, items, *args, **kwargs)

    monkeypatch.setattr(BatchEngine, "run", counted)
    one = model.embed(["one query"])
    few = model.embed(MIXED_TEXTS)
    assert runs == [1, len(MIXED_TEXTS)]
    np.testing.assert_array_equal(one, model.encode(["one query"])[0])
    np.testing.assert_array_equal(few, model.encode(MIXED_TEXTS)[0])


def test_gpu_sampler_says_plainly_when_there_is_no_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: tests/gpu/test_gpu.py covers telemetry there")
    with GpuSampler(interval_s=0.01) as gpu:
        pass
    summary = gpu.summary()
    assert summary["gpu"].startswith("no NVIDIA GPU")
    assert gpu._thread is None and gpu.util == []


@pytest.mark.slow  # torch.compile: inductor builds C++ kernels, tens of seconds
@pytest.mark.skipif(
    not (shutil.which("g++") or shutil.which("c++")),
    reason="torch.compile on a CPU needs a C++ compiler (inductor generates C++)",
)
def test_compiled_model_gives_the_eager_vectors(tiny_embedder_path):
    """`compile=True` (torch.compile, opt-in) changes speed, not results: same vectors as
    eager on texts of mixed lengths, both warm-up compiles done by `load`, and the
    lineage says the model was compiled."""
    import torch._dynamo

    from corpusmill.model import Model, ModelSpec

    torch._dynamo.reset()
    eager = Model(ModelSpec(path=str(tiny_embedder_path), dtype="float32")).load()
    compiled = Model(ModelSpec(path=str(tiny_embedder_path), dtype="float32", compile=True))
    compiled.load()
    assert compiled.lineage()["compiled"] is True and eager.lineage()["compiled"] is False
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert cosine_rows(compiled.embed(MIXED_TEXTS), eager.embed(MIXED_TEXTS)).min() >= 0.9999
    # The warm-up compiled a shape-general graph: new shapes compile nothing more.
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs


def test_token_ids_skip_the_tokenizer_and_give_the_same_rows(tiny_embedder_path):
    """Items handed over as TokenIds (what the chunker stores) are never re-tokenised, and
    embed exactly as their texts do, token type ids included (the tiny model is a BERT)."""
    enc = TransformerEncoder(tiny_embedder_path, dtype="float32", forward="transformers")
    assert enc.uses_token_type_ids
    texts = [f"{i} " + MIXED_TEXTS[i % len(MIXED_TEXTS)] for i in range(40)]
    ids = [t["input_ids"] for t in enc.tokenize(texts)]
    mixed = [TokenIds(ids[i]) if i % 3 else texts[i] for i in range(len(texts))]

    seen: list = []

    class Counting:
        pad_id = enc.pad_id
        uses_token_type_ids = enc.uses_token_type_ids

        def tokenize(self, items):
            seen.extend(items)
            return enc.tokenize(items)

        def forward(self, batch):
            return enc.forward(batch)

    from_text, _ = BatchEngine(enc, max_batch_tokens=256).encode(texts)
    from_ids, stats = BatchEngine(Counting(), max_batch_tokens=256).encode(mixed)
    np.testing.assert_array_equal(from_text, from_ids)
    assert stats.pretokenized == sum(1 for m in mixed if isinstance(m, TokenIds)) > 0
    assert seen == [t for t in mixed if isinstance(t, str)]
