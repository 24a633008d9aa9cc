"""Cut documents into chunks measured in the model's own tokens.

Chunks are windows of `chunk_tokens` tokens with `overlap` tokens shared between
neighbours. A cut is moved back to the nearest word boundary (a whitespace gap between
two tokens) so that re-tokenising a chunk gives the same tokens. Each chunk's ids with
special tokens are counted, so truncation is measured, never assumed; they are exactly
what the embedding engine would compute again, so each chunk keeps them (`input_ids`) for
the engine, together with the fingerprint of the tokenizer that made them.

Where a word's tokens cannot depend on its neighbours (`_word_local`: BERT's WordPiece
behind its whitespace-first pre-tokenizer, the default model's), a chunk cut at word
boundaries on both sides takes its ids from the document's own tokens, wrapped in the
special tokens, instead of being tokenised a second time. Any other chunk, and every
chunk of any other tokenizer, is tokenised again; a sample of the sliced ones is tokenised
again too, and one difference turns slicing off for the chunker (`_Slicer`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from corpusmill.config import tokenizer_pool
from corpusmill.errors import ConfigError
from corpusmill.ids import chunk_id, content_hash

CHUNKER_VERSION = "tok-v1"
_BOUNDARY_SEARCH = 24  # tokens to look back for a word boundary before cutting mid-word
SEGMENT_CHARS = 64 * 1024  # a longer text is tokenised in segments of about this size
# Characters per tokenizer call, and the window a longer text is cut in: the encodings of
# one call cost about 300 bytes a character in Python objects (offsets as tuples of ints,
# ids as lists), so 1 MB calls held ~300 MB while 256 KB ones hold ~80 MB.
GROUP_CHARS = 256 * 1024


def chunker_version(chunk_tokens: int, overlap: int) -> str:
    """The chunker's identity without a tokenizer: algorithm version, size, overlap."""
    return f"{CHUNKER_VERSION}:{chunk_tokens}:{overlap}"


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    doc_id: str
    position: int
    text: str
    content_hash: str
    n_tokens: int  # as the model sees it, special tokens included
    # The model's input ids for this text; None when over the model limit (the engine
    # then tokenises with truncation) or when the chunker has no tokenizer_id.
    input_ids: list[int] | None = None
    # Where `text` sits in the text it was cut from: text == source[start:end]. The chunk
    # sync maps this span to the pages and section it covers (`sources.locate`).
    start: int = 0
    end: int = 0


@dataclass(frozen=True)
class ChunkedBatch:
    chunks: list[Chunk]
    truncated: int  # chunks longer than the model limit (0 unless something is wrong)


class TokenChunker:
    """Splits text by the tokenizer of the model that will embed it."""

    def __init__(
        self,
        tokenizer,
        chunk_tokens: int,
        overlap: int,
        max_seq_length: int,
        tokenizer_id: str = "",
    ) -> None:
        special = tokenizer.num_special_tokens_to_add(pair=False)
        if chunk_tokens < 8:
            raise ConfigError(
                f"chunk size {chunk_tokens} tokens is too small (CORPUSMILL_CHUNK_TOKENS >= 8)"
            )
        if chunk_tokens + special > max_seq_length:
            raise ConfigError(
                f"chunk size {chunk_tokens} + {special} special tokens exceeds the model's "
                f"max sequence length {max_seq_length}; set CORPUSMILL_CHUNK_TOKENS <= "
                f"{max_seq_length - special}"
            )
        if not 0 <= overlap < chunk_tokens // 2 + 1:
            raise ConfigError(
                f"overlap {overlap} must be >= 0 and at most half the chunk size "
                f"({chunk_tokens // 2}); set CORPUSMILL_CHUNK_OVERLAP"
            )
        self.tokenizer = tokenizer
        self.chunk_tokens = chunk_tokens
        self.overlap = overlap
        self.max_seq_length = max_seq_length
        self.tokenizer_id = tokenizer_id  # e.g. TransformerEncoder.tokenizer_id; "" = keep no ids
        self.window_chars = GROUP_CHARS  # a longer text is tokenised and cut window by window
        self.slicer = _Slicer.for_tokenizer(tokenizer)

    @property
    def version(self) -> str:
        """Goes into every chunk id: changing size or overlap gives new ids."""
        return chunker_version(self.chunk_tokens, self.overlap)

    def chunk_documents(self, docs: Sequence[tuple[str, str]]) -> ChunkedBatch:
        """Chunk (doc_id, text) pairs, all at once (`batches` yields the same chunks a
        window at a time)."""
        chunks: list[Chunk] = []
        truncated = 0
        for batch in self.batches(docs):
            chunks.extend(batch.chunks)
            truncated += batch.truncated
        return ChunkedBatch(chunks, truncated)

    def batches(
        self,
        docs: Iterable[tuple[str, str]],
        progress: Callable[[str, int, int, int], None] | None = None,
    ) -> Iterator[ChunkedBatch]:
        """The chunks of (doc_id, text) pairs, in order, a batch of about `window_chars`
        characters of text at a time. Short texts are tokenised together (one bounded
        call for many); a text longer than the window is tokenised and cut window by
        window, so what is held is one window's encodings, never the whole text's (a
        10 MB single-line file tokenised whole held 2.2 GB of encodings with a tiny
        model). `progress(doc_id, chars_done, chars_total, tokens)` hears when a long text
        starts and after each of its windows."""
        short: list[tuple[str, str]] = []
        size = 0
        for doc_id, text in docs:
            if len(text) > self.window_chars:
                if short:
                    yield self._chunk_short(short)
                    short, size = [], 0
                yield from self._chunk_long(doc_id, text, progress)
                continue
            short.append((doc_id, text))
            size += len(text)
            if size >= self.window_chars:
                yield self._chunk_short(short)
                short, size = [], 0
        if short:
            yield self._chunk_short(short)

    def _chunk_short(self, docs: Sequence[tuple[str, str]]) -> ChunkedBatch:
        tokens = self._offsets([text for _, text in docs])
        pieces: list[_Piece] = []
        for (doc_id, text), doc_tokens in zip(docs, tokens, strict=True):
            for position, (start, end, ids) in enumerate(self._spans([doc_tokens])):
                pieces.append(_piece(doc_id, position, text, start, end, ids))
        return self._chunks(pieces)

    def _chunk_long(
        self, doc_id: str, text: str, progress: Callable[[str, int, int, int], None] | None
    ) -> Iterator[ChunkedBatch]:
        pieces: list[_Piece] = []
        size = tokens = 0
        if progress is not None:
            progress(doc_id, 0, len(text), 0)
        for position, (start, end, ids) in enumerate(self._spans(self._offset_windows(text))):
            pieces.append(_piece(doc_id, position, text, start, end, ids))
            size += end - start
            if size >= self.window_chars:
                batch = self._chunks(pieces)
                tokens += sum(c.n_tokens for c in batch.chunks)
                if progress is not None:
                    progress(doc_id, end, len(text), tokens)
                yield batch
                pieces, size = [], 0
        batch = self._chunks(pieces)
        if progress is not None:
            progress(doc_id, len(text), len(text), tokens + sum(c.n_tokens for c in batch.chunks))
        yield batch

    def _chunks(self, pieces: list[_Piece]) -> ChunkedBatch:
        """Chunks of (doc_id, position, text, start, end, sliced ids) pieces, counted with
        their special tokens: the sliced ids where there are some, else the text
        tokenised again (in bounded calls)."""
        input_ids = self.slicer.ids(pieces, self._tokenise)
        chunks = [
            Chunk(
                chunk_id=chunk_id(doc_id, position, self.version),
                doc_id=doc_id,
                position=position,
                text=text,
                content_hash=content_hash(text),
                n_tokens=len(ids),
                input_ids=ids if self.tokenizer_id and len(ids) <= self.max_seq_length else None,
                start=start,
                end=end,
            )
            for (doc_id, position, text, start, end, _), ids in zip(pieces, input_ids, strict=True)
        ]
        truncated = sum(1 for c in chunks if c.n_tokens > self.max_seq_length)
        return ChunkedBatch(chunks, truncated)

    def _encode(self, texts: list[str], special_tokens: bool, offsets: bool = False) -> Any:
        """Every call the chunker makes to its tokenizer, on every core: the chunker runs
        alone in its step, where the second core had nothing to do (docs/BENCHMARKS.md,
        "the chunker on every core")."""
        with tokenizer_pool():
            return self.tokenizer(
                texts,
                add_special_tokens=special_tokens,
                return_offsets_mapping=offsets,
                return_attention_mask=False,
                return_token_type_ids=False,
            )

    def _tokenise(self, texts: list[str]) -> list[list[int]]:
        """Each text's ids with special tokens, in bounded calls."""
        input_ids: list[list[int]] = []
        for group in _bounded_groups(texts):
            input_ids.extend(self._encode(group, special_tokens=True)["input_ids"])
        return input_ids

    def _offsets(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Per text, an (n_tokens, 3) array of each token's character offsets and id,
        tokenised segment by segment (offsets shifted back to the whole text)."""
        segments = [
            (i, start, text[start:end])
            for i, text in enumerate(texts)
            for start, end in _segments(text)
        ]
        per_text: list[list[np.ndarray]] = [[] for _ in texts]
        for group in _bounded_groups(segments, key=lambda seg: seg[2]):
            for (i, start, _), offs in zip(
                group, self._offset_mapping([seg[2] for seg in group]), strict=True
            ):
                per_text[i].append(_shifted(offs, start))
        return [
            np.concatenate(parts) if parts else np.zeros((0, 3), np.int64) for parts in per_text
        ]

    def _offset_windows(self, text: str) -> Iterator[np.ndarray]:
        """The character offsets and ids of one long text's tokens, a window of segments at
        a time."""
        cuts = _segments(text, min(SEGMENT_CHARS, self.window_chars))
        for group in _bounded_groups(cuts, key=lambda cut: range(*cut), chars=self.window_chars):
            arrays = self._offset_mapping([text[start:end] for start, end in group])
            yield np.concatenate(
                [_shifted(offs, start) for (start, _), offs in zip(group, arrays, strict=True)]
            )

    def _offset_mapping(self, texts: list[str]) -> list[np.ndarray]:
        enc = self._encode(texts, special_tokens=False, offsets=True)
        return [
            np.column_stack(
                [np.asarray(offs, dtype=np.int64).reshape(-1, 2), np.asarray(ids, dtype=np.int64)]
            )
            for offs, ids in zip(enc["offset_mapping"], enc["input_ids"], strict=True)
        ]

    def _spans(self, windows: Iterable[np.ndarray]) -> Iterator[tuple[int, int, np.ndarray | None]]:
        """Character spans of the token windows of one document, whose token offsets and
        ids arrive in consecutive arrays (`windows`), each with its tokens' ids. A span is
        cut as soon as the tokens it and its boundary search need are known; tokens before
        the current chunk's start are dropped, so what is held is one window plus one
        chunk."""
        arrays = iter(windows)
        buf = np.zeros((0, 3), np.int64)  # offsets and id of tokens base, base + 1, ...
        base = start = 0
        more = True
        while True:
            # Whole-text cutting needs tokens up to start + chunk_tokens (the boundary
            # search and the next start look no further), or the end of the text.
            while more and base + len(buf) <= start + self.chunk_tokens:
                nxt = next(arrays, None)
                if nxt is None:
                    more = False
                else:
                    buf, base = np.concatenate([buf[start - base :], nxt]), start
            n = base + len(buf)
            if start >= n:
                return
            # Local indices from here: never at 0 (the searches start after `start`).
            s, e = start - base, min(start + self.chunk_tokens, n) - base
            if e + base < n:
                e = self._back_to_boundary(buf, s, e)
            yield int(buf[s][0]), int(buf[e - 1][1]), buf[s:e, 2]
            if e + base >= n:
                return
            nxt_start = max(s + 1, e - self.overlap)
            aligned = nxt_start
            while aligned < e and not _is_boundary(buf, aligned):
                aligned += 1
            start = base + (aligned if aligned < e or self.overlap == 0 else nxt_start)

    def _back_to_boundary(self, offsets, start: int, end: int) -> int:
        floor = max(start + 1, end - _BOUNDARY_SEARCH)
        for j in range(end, floor - 1, -1):
            if _is_boundary(offsets, j):
                return j
        return end  # one very long "word": cut inside it; the count below still checks it


# (doc_id, position, text, start, end, the chunk's ids sliced from its document's, or None)
_Piece = tuple[str, int, str, int, int, "np.ndarray | None"]
# Characters every word-local tokenizer splits words at and keeps (BERT's normaliser
# deletes control characters such as U+001F instead: "0\x1fA" is one word, "0" + "##a").
_SPACES = frozenset(" \t\n\r")


def _piece(doc_id: str, position: int, text: str, start: int, end: int, ids) -> _Piece:
    """The chunk text[start:end] and its document's ids for it, kept only where a space
    on each side (or the text's edge) makes the chunk whole words: a chunk begun or ended
    inside a word (a long word cut, an overlap with no word boundary) is tokenised again."""
    whole = (start == 0 or text[start - 1] in _SPACES) and (
        end == len(text) or text[end] in _SPACES
    )
    return (doc_id, position, text[start:end], start, end, ids if whole else None)


class _Slicer:
    """A chunk's ids with special tokens from its document's ids, where that is exactly
    what tokenising the chunk again gives.

    It is where a word's tokens depend on nothing outside the word: a WordPiece model
    behind a pre-tokenizer that splits at whitespace before anything else (BERT's, or
    `Whitespace`/`WhitespaceSplit`), with BERT's normaliser or none (each changes
    characters one at a time). A chunk with a space on each side (`_piece`) then has the
    tokens the document had there; the special tokens around it are read off one call.
    Every `SAMPLE`-th sliced chunk is tokenised again anyway, and a difference turns
    slicing off for good (the chunk batch in hand is then tokenised whole)."""

    SAMPLE = 64

    def __init__(self, prefix: list[int], suffix: list[int], on: bool = True) -> None:
        self.prefix = prefix
        self.suffix = suffix
        self.on = on

    @classmethod
    def for_tokenizer(cls, tokenizer) -> _Slicer:
        """Slicing on where the tokenizer is word-local (`_word_local`), else off."""
        off = cls([], [], on=False)
        if not _word_local(tokenizer):
            return off
        probe = "corpusmill probes a tokenizer"
        plain = list(tokenizer([probe], add_special_tokens=False)["input_ids"][0])
        full = list(tokenizer([probe], add_special_tokens=True)["input_ids"][0])
        n = len(plain)
        at = next((i for i in range(len(full) - n + 1) if full[i : i + n] == plain), None)
        return off if at is None or n == 0 else cls(full[:at], full[at + n :])

    def ids(self, pieces: list[_Piece], tokenise) -> list[list[int]]:
        """Each piece's ids with special tokens: sliced, or `tokenise`d again."""
        out: list[list[int] | None] = [
            self.prefix + sliced.tolist() + self.suffix if self.on and sliced is not None else None
            for *_, sliced in pieces
        ]
        check = [i for i, ids in enumerate(out) if ids is not None][:: self.SAMPLE]
        if check and tokenise([pieces[i][2] for i in check]) != [out[i] for i in check]:
            self.on = False
            out = [None] * len(pieces)
        again = [i for i, ids in enumerate(out) if ids is None]
        for i, ids in zip(again, tokenise([pieces[i][2] for i in again]), strict=True):
            out[i] = ids
        return out  # type: ignore[return-value]


def _word_local(tokenizer) -> bool:
    """A WordPiece tokenizer whose pre-tokenizer splits at whitespace first and whose
    normaliser (if any) is BERT's: a word's tokens depend only on the word."""
    from tokenizers import models, normalizers, pre_tokenizers

    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "backend", None)
    if backend is None or not hasattr(backend, "pre_tokenizer"):
        return False
    word_split = (
        pre_tokenizers.BertPreTokenizer,
        pre_tokenizers.Whitespace,
        pre_tokenizers.WhitespaceSplit,
    )
    return (
        isinstance(backend.model, models.WordPiece)
        and isinstance(backend.pre_tokenizer, word_split)
        and (
            backend.normalizer is None or isinstance(backend.normalizer, normalizers.BertNormalizer)
        )
    )


def _shifted(tokens: np.ndarray, start: int) -> np.ndarray:
    """Token rows (start, end, id) with their offsets moved `start` characters on."""
    return tokens + np.array([start, start, 0], dtype=np.int64)


def _segments(text: str, size: int = SEGMENT_CHARS) -> list[tuple[int, int]]:
    """(start, end) cuts of `text` of at most about `size` characters, each cut at the
    last whitespace before the limit (the tokenizer splits there anyway, so the tokens
    are the same as for the whole text); a run of `size` characters with no whitespace
    is cut where it is."""
    cuts = []
    start, n = 0, len(text)
    while start < n:
        end = min(start + size, n)
        if end < n:
            space = max(text.rfind(c, start + size // 2, end) for c in " \n\t")
            end = space + 1 if space > start else end
        cuts.append((start, end))
        start = end
    return cuts or [(0, 0)]


def _bounded_groups(items: list, key=lambda item: item, chars: int = GROUP_CHARS):
    """Consecutive groups of `items` holding about `chars` characters each: one
    tokenizer call per group, so its encodings stay small."""
    group: list = []
    total = 0
    for item in items:
        group.append(item)
        total += len(key(item))
        if total >= chars:
            yield group
            group, total = [], 0
    if group:
        yield group


def _is_boundary(offsets, j: int) -> bool:
    """True if token j starts after a gap, i.e. begins a new whitespace-separated word."""
    return j == 0 or offsets[j][0] > offsets[j - 1][1]
