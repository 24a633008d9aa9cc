"""Ids, hashes, shards and the token chunker (real MiniLM tokenizer, no model)."""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corpusmill.chunking import TokenChunker
from corpusmill.errors import ConfigError
from corpusmill.ids import ALL_PARTITIONS, chunk_id, content_hash, partition_of, shard_of


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_path))


def test_ids_are_deterministic_and_distinct():
    assert chunk_id("pydoc#try", 0, "v1") == chunk_id("pydoc#try", 0, "v1")
    ids = {chunk_id("pydoc#try", i, "v1") for i in range(100)}
    assert len(ids) == 100
    assert chunk_id("pydoc#try", 0, "v1") != chunk_id("pydoc#try", 0, "v2")
    assert content_hash("a", "bc") != content_hash("ab", "c")


def test_shards_are_stable_and_spread():
    ids = [f"inbox#file-{i}.txt" for i in range(4000)]
    counts = {p: 0 for p in ALL_PARTITIONS}
    for d in ids:
        counts[partition_of(d)] += 1
        assert partition_of(d) == partition_of(d)
    # 4000 ids over 16 shards: each within +-30% of 250
    assert all(175 < c < 325 for c in counts.values()), counts
    assert shard_of("pydoc#try") == shard_of("pydoc#try")


def test_chunks_respect_size_overlap_and_model_limit(tokenizer):
    text = " ".join(f"word{i} is here, with punctuation." for i in range(400))
    chunker = TokenChunker(tokenizer, chunk_tokens=64, overlap=16, max_seq_length=256)
    result = chunker.chunk_documents([("doc#1", text)])
    assert result.truncated == 0
    assert len(result.chunks) > 5
    for c in result.chunks:
        assert c.n_tokens <= 64 + 2  # [CLS] + [SEP]
        assert c.text in text  # a chunk is a verbatim span of the document
    # neighbours overlap: the start of chunk i+1 lies inside chunk i
    for a, b in zip(result.chunks, result.chunks[1:], strict=False):
        assert text.index(b.text) < text.index(a.text) + len(a.text)
    # positions and ids
    assert [c.position for c in result.chunks] == list(range(len(result.chunks)))
    assert len({c.chunk_id for c in result.chunks}) == len(result.chunks)


def test_chunk_text_retokenises_to_same_count(tokenizer):
    text = "Exceptions are raised when an error is detected. " * 200
    chunker = TokenChunker(tokenizer, 100, 10, 256)
    for c in chunker.chunk_documents([("d", text)]).chunks:
        assert len(tokenizer(c.text)["input_ids"]) == c.n_tokens


def test_whole_document_is_covered(tokenizer):
    words = [f"w{i}" for i in range(1000)]
    chunker = TokenChunker(tokenizer, 50, 0, 256)
    chunks = chunker.chunk_documents([("d", " ".join(words))]).chunks
    seen = " ".join(c.text for c in chunks).split()
    assert seen == words  # overlap 0: every word exactly once, in order


def test_short_document_is_one_chunk(tokenizer):
    chunker = TokenChunker(tokenizer, 200, 32, 256)
    chunks = chunker.chunk_documents([("d", "Just one sentence.")]).chunks
    assert [c.text for c in chunks] == ["Just one sentence."]


def test_invalid_sizes_name_the_setting(tokenizer):
    with pytest.raises(ConfigError, match="CORPUSMILL_CHUNK_TOKENS"):
        TokenChunker(tokenizer, 300, 0, 256)
    with pytest.raises(ConfigError, match="CORPUSMILL_CHUNK_OVERLAP"):
        TokenChunker(tokenizer, 100, 90, 256)


def test_chunker_version_changes_ids(tokenizer):
    a = TokenChunker(tokenizer, 100, 10, 256).chunk_documents([("d", "hello world")]).chunks[0]
    b = TokenChunker(tokenizer, 120, 10, 256).chunk_documents([("d", "hello world")]).chunks[0]
    assert a.content_hash == b.content_hash and a.chunk_id != b.chunk_id


def test_chunks_keep_exactly_the_ids_the_encoder_would_compute(tiny_embedder_path):
    from corpusmill.model.encoder import TransformerEncoder

    enc = TransformerEncoder(tiny_embedder_path, dtype="float32")
    text = " ".join(f"Protein {i} folds, unfolds; refolds again." for i in range(60))
    chunks = (
        TokenChunker(enc.tokenizer, 40, 8, enc.max_seq_length, tokenizer_id=enc.tokenizer_id)
        .chunk_documents([("doc#1", text), ("doc#2", "short one")])
        .chunks
    )
    assert len(chunks) > 3
    expected = [t["input_ids"] for t in enc.tokenize([c.text for c in chunks])]
    assert [c.input_ids for c in chunks] == expected
    assert all(len(c.input_ids) == c.n_tokens for c in chunks)
    # Without a tokenizer id there is nothing to vouch for the ids: none are kept.
    plain = TokenChunker(enc.tokenizer, 40, 8, enc.max_seq_length).chunk_documents(
        [("doc#2", "short one")]
    )
    assert plain.chunks[0].input_ids is None


def test_tokenizer_fingerprint_follows_tokenizer_files_and_limit_not_weights(
    tiny_embedder_path, tmp_path
):
    import shutil

    from corpusmill.model.files import tokenizer_fingerprint

    copy = tmp_path / "model"
    shutil.copytree(tiny_embedder_path, copy)
    vocab_files = ["vocab.txt", "tokenizer.json"]

    def fingerprint(limit: int = 64) -> str:
        return tokenizer_fingerprint(copy, vocab_files, limit)

    base = fingerprint()
    assert fingerprint() == base and fingerprint(32) != base
    for unrelated in (*copy.glob("*.safetensors"), copy / "config.json"):
        unrelated.write_bytes(unrelated.read_bytes() + b" ")
    assert fingerprint() == base
    for name in ("tokenizer.json", "tokenizer_config.json"):
        path = copy / name
        assert path.is_file()
        original = path.read_bytes()
        path.write_bytes(original + b"\n")
        assert fingerprint() != base
        path.write_bytes(original)
    assert fingerprint() == base


@pytest.mark.parametrize(
    "text",
    [
        " ".join(f"word{i % 97} and more, text{i}." for i in range(3000)),  # one line
        "\n".join(f"line {i}: Exceptions are raised here. " * (i % 5 + 1) for i in range(900)),
        "Übergrößenträger naïve café 東京 " * 1500,  # multi-byte, CJK split per character
    ],
    ids=["one-line", "many-lines", "unicode"],
)
def test_a_text_longer_than_a_window_is_cut_as_when_whole(tokenizer, text):
    """Window by window (1,000 characters: dozens of windows, a window smaller than some
    chunks' lookahead) gives exactly the chunks one window over the whole text gives."""
    whole = TokenChunker(tokenizer, 24, 4, 256, tokenizer_id="t")
    whole.window_chars = 10**9
    windowed = TokenChunker(tokenizer, 24, 4, 256, tokenizer_id="t")
    windowed.window_chars = 1000
    heard: list[tuple[int, int]] = []
    batches = list(
        windowed.batches([("d", text)], lambda _d, done, total, _t: heard.append((done, total)))
    )
    expected = whole.chunk_documents([("d", text)]).chunks
    assert len(batches) > 20
    assert [c for b in batches for c in b.chunks] == expected
    assert len(expected) > 100
    # progress: one report at the start and one per window, rising to the whole text
    assert len(heard) == len(batches) + 1
    assert heard[0] == (0, len(text)) and heard[-1] == (len(text), len(text))
    assert [d for d, _ in heard] == sorted(d for d, _ in heard)


def test_a_single_line_without_whitespace_is_cut_in_bounded_windows(tokenizer):
    """No whitespace at all: the text is cut at a character count, each window's tokens
    come from a call of one window, all calls together see the text a bounded number of
    times (not quadratic), and the chunks cover it."""
    text = "abcdefghij" * 30_000  # 300,000 characters, one "word"
    chunker = TokenChunker(tokenizer, 24, 4, 256, tokenizer_id="t")
    chunker.window_chars = 20_000
    real, sizes = chunker.tokenizer, []

    def recording(texts, **kw):
        sizes.append((sum(len(t) for t in texts), bool(kw.get("return_offsets_mapping"))))
        return real(texts, **kw)

    chunker.tokenizer = recording
    chunks = [c for b in chunker.batches([("d", text)]) for c in b.chunks]
    assert max(n for n, offsets in sizes if offsets) <= 20_000
    assert sum(n for n, _ in sizes) <= 3 * len(text)
    assert chunks and chunks[0].start == 0 and chunks[-1].end == len(text)
    assert all(a.end >= b.start for a, b in zip(chunks, chunks[1:], strict=False))


# Words whose tokens could depend on their neighbours if slicing were wrong: accents,
# CJK (split per character), punctuation runs, a literal special token, control and
# zero-width characters, and "words" longer than a chunk (cut inside, then tokenised again).
_TRICKY = st.sampled_from(
    [
        "café",
        "naïve",
        "東京",
        "über-größe",
        "don't",
        "[SEP]",
        "x[CLS]y",
        "##ing",
        "a\u200bb",
        "e\u0301",
        "\t",
        "\n\n",
        "...!?",
        "unbelievably",
        "Protein-42",
        "x" * 90,
        "αβγ",
        "🙂",
        "0\x1fA",  # a control character BERT deletes: one word, "0" + "##a"
        "\x85",
        "\u00a0",
        "\u3000x",
    ]
)
_WORDS = st.lists(st.one_of(_TRICKY, st.text(min_size=1, max_size=12)), min_size=1, max_size=300)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(words=_WORDS, overlap=st.sampled_from([0, 3, 8]), sep=st.sampled_from([" ", "  ", "\n"]))
def test_sliced_ids_are_the_ids_of_each_chunk_tokenised_again(tokenizer, words, overlap, sep):
    """The default model's tokenizer is word-local: chunk ids are sliced from the
    document's tokens, and each is exactly what tokenising the chunk's text again gives."""
    chunker = TokenChunker(tokenizer, 20, overlap, 256, tokenizer_id="t")
    assert chunker.slicer.on
    for c in chunker.chunk_documents([("d", sep.join(words))]).chunks:
        assert c.input_ids == tokenizer(c.text)["input_ids"], c.text
        assert c.n_tokens == len(c.input_ids)
    assert chunker.slicer.on  # no sampled chunk disagreed


def test_chunks_are_sliced_not_tokenised_again(tokenizer):
    text = " ".join(f"Exceptions {i} are raised, caught and logged." for i in range(400))
    chunker = TokenChunker(tokenizer, 48, 8, 256, tokenizer_id="t")
    real, again = chunker.tokenizer, []

    def recording(texts, **kw):
        if kw.get("add_special_tokens") and not kw.get("return_offsets_mapping"):
            again.extend(texts)
        return real(texts, **kw)

    chunker.tokenizer = recording
    chunks = chunker.chunk_documents([("d", text)]).chunks
    assert len(chunks) > 64
    # Only the sample (every 64th sliced chunk) is tokenised a second time.
    assert len(again) == len(range(0, len(chunks), 64))
    assert [c.input_ids for c in chunks] == [real(c.text)["input_ids"] for c in chunks]


def test_a_wrong_slice_turns_slicing_off_and_the_chunks_stay_right(tokenizer):
    text = " ".join(f"word{i} and more." for i in range(300))
    chunker = TokenChunker(tokenizer, 24, 4, 256, tokenizer_id="t")
    chunker.slicer.suffix = []  # as if the special tokens were read off wrongly
    chunks = chunker.chunk_documents([("d", text)]).chunks
    assert not chunker.slicer.on
    assert [c.input_ids for c in chunks] == [tokenizer(c.text)["input_ids"] for c in chunks]


def test_a_tokenizer_whose_words_depend_on_their_neighbours_is_not_sliced(tokenizer):
    """Byte-level BPE marks a word after a space ("Ġword") but not at a text's start: a
    sliced chunk would keep the mark, tokenising it again would not. Such a tokenizer
    (built here from the default's vocabulary words) is tokenised again, chunk by chunk."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    corpus = [" ".join(f"token{i} word{i % 7} again" for i in range(200))]
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=bpe)
    chunker = TokenChunker(fast, 16, 4, 256, tokenizer_id="bpe")
    assert not chunker.slicer.on
    chunks = chunker.chunk_documents([("d", corpus[0])]).chunks
    assert len(chunks) > 10
    assert [c.input_ids for c in chunks] == [fast(c.text)["input_ids"] for c in chunks]


_TEST_PID = os.getpid()


def _recording(chunker, seen):
    """The chunker's tokenizer, noting TOKENIZERS_PARALLELISM at each call (the value the
    `tokenizers` library reads)."""
    real = chunker.tokenizer

    def call(texts, **kw):
        seen.append(os.environ.get("TOKENIZERS_PARALLELISM"))
        if seen[-1] == "true" and os.getpid() != _TEST_PID:
            raise RuntimeError("the pool turned on in a forked child")  # would hang there
        return real(texts, **kw)

    chunker.tokenizer = call
    return chunker


def test_the_chunker_tokenises_on_the_thread_pool_and_puts_the_setting_back(tokenizer, monkeypatch):
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # as config.prepare_process sets
    text = " ".join(f"word{i} and more." for i in range(300))
    seen: list[str | None] = []
    chunker = _recording(TokenChunker(tokenizer, 24, 4, 256, tokenizer_id="t"), seen)
    chunker.slicer.suffix = []  # every chunk is then tokenised again: both kinds of call
    chunks = chunker.chunk_documents([("d", text)]).chunks
    assert len(seen) >= 2 and set(seen) == {"true"}
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    assert [c.input_ids for c in chunks] == [tokenizer(c.text)["input_ids"] for c in chunks]


def test_a_child_forked_after_the_pool_ran_keeps_it_off(tokenizer, monkeypatch):
    """A forked child has the pool's state but not its threads: turning it on there would
    hang the child's first call."""
    import multiprocessing

    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    text = " ".join(f"word{i} and more." for i in range(300))
    TokenChunker(tokenizer, 24, 4, 256).chunk_documents([("d", text)])  # the pool has run here
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()

    def child() -> None:
        seen: list[str | None] = []
        try:
            _recording(TokenChunker(tokenizer, 24, 4, 256), seen).chunk_documents([("d", text)])
            results.put(seen)
        except Exception as e:  # noqa: BLE001 - reported to the parent
            results.put(repr(e))

    process = ctx.Process(target=child)
    process.start()
    outcome = results.get(timeout=120)
    process.join(timeout=30)
    assert outcome and set(outcome) == {"false"}, outcome
