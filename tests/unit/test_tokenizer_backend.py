"""The engine's tokenizer backend (corpusmill/model/tokenizer.py): `tokenizers` on the
folder's tokenizer.json gives Transformers' ids, types and truncation, is used only when it
was checked to, and the check is kept so a later process does not load Transformers."""

from __future__ import annotations

import pytest

from corpusmill.model.files import describe_model
from corpusmill.model.tokenizer import Tokenizer
from tests.texts import MIXED_TEXTS

LONG = " ".join(MIXED_TEXTS * 20)  # far past the tiny model's 64-token limit


@pytest.mark.parametrize("kind", ["embedder", "cross-encoder"])
def test_the_tokenizers_backend_gives_transformers_ids(
    kind, tiny_embedder_path, tiny_cross_encoder_path
):
    path = tiny_embedder_path if kind == "embedder" else tiny_cross_encoder_path
    tokens = Tokenizer(describe_model(path, kind))
    assert tokens.backend == "tokenizers"
    texts: list = [*MIXED_TEXTS, LONG, ""]
    if kind == "cross-encoder":
        texts = [(a, b) for a in texts for b in (MIXED_TEXTS[0], LONG)]
    got = tokens.tokenize(texts)
    want = tokens._tokenize_with(tokens.hf, texts)
    assert got == want
    assert max(len(t["input_ids"]) for t in got) == tokens.max_seq_length  # truncated alike
    if kind == "embedder":  # every token of a text (the service counts its inputs)
        whole = tokens.tokenize([LONG], truncate=False)
        assert whole == tokens._tokenize_with(tokens.hf, [LONG], truncate=False)
        assert len(whole[0]["input_ids"]) > tokens.max_seq_length


def test_a_backend_that_disagrees_is_not_used(tiny_embedder_path, monkeypatch):
    real = Tokenizer._raw

    def shorter(self):
        backend = real(self)
        backend.enable_truncation(max_length=self.max_seq_length // 2)
        return backend

    monkeypatch.setattr(Tokenizer, "_raw", shorter)
    tokens = Tokenizer(describe_model(tiny_embedder_path, "embedder"))
    assert tokens.backend == "transformers"
    assert len(tokens.tokenize([LONG])[0]["input_ids"]) == tokens.max_seq_length


def test_the_check_is_kept_and_a_later_tokenizer_does_not_load_transformers(
    tiny_embedder_path, tmp_path
):
    desc = describe_model(tiny_embedder_path, "embedder")
    first = Tokenizer(desc, cache_dir=str(tmp_path))
    assert first._hf is not None  # the check needed Transformers' tokenizer
    again = Tokenizer(desc, cache_dir=str(tmp_path))
    assert again._hf is None and again.backend == "tokenizers"
    assert (again.fingerprint, again.pad_id, again.uses_token_type_ids) == (
        first.fingerprint,
        first.pad_id,
        first.uses_token_type_ids,
    )
    assert again.tokenize(MIXED_TEXTS) == first.tokenize(MIXED_TEXTS)
    assert again._hf is None


def test_the_chunker_cuts_the_same_chunks_with_either_backend(tiny_embedder_path):
    from corpusmill.chunking import TokenChunker
    from corpusmill.model.tokenizer import TokenizersCall

    tokens = Tokenizer(describe_model(tiny_embedder_path, "embedder"))
    assert isinstance(tokens.chunker, TokenizersCall)
    docs = [(f"d{i}", t) for i, t in enumerate([*MIXED_TEXTS, LONG, "naïve café — ünïcode"])]
    chunked = [
        TokenChunker(tok, 24, 4, tokens.max_seq_length, tokens.fingerprint).chunk_documents(docs)
        for tok in (tokens.chunker, tokens.hf)
    ]
    assert chunked[0] == chunked[1] and len(chunked[0].chunks) > len(docs)
    # The service checks token-id inputs against the vocabulary by len(), as Transformers'.
    assert len(tokens.chunker) == len(tokens.hf)
