"""Cut documents into chunks measured in the model's own tokens.

Chunks are windows of `chunk_tokens` tokens with `overlap` tokens shared between
neighbours. A cut is moved back to the nearest word boundary (a whitespace gap between
two tokens) so that re-tokenising a chunk gives the same tokens; every chunk is then
re-tokenised with special tokens and counted, so truncation is measured, never assumed.
Those ids are exactly what the embedding engine would compute again, so each chunk keeps
them (`input_ids`) for the engine, together with the fingerprint of the tokenizer that
made them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

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
        offsets = self._offsets([text for _, text in docs])
        pieces: list[tuple[str, int, str, int, int]] = []
        for (doc_id, text), doc_offsets in zip(docs, offsets, strict=True):
            for position, (start, end) in enumerate(self._spans([doc_offsets])):
                pieces.append((doc_id, position, text[start:end], start, end))
        return self._chunks(pieces)

    def _chunk_long(
        self, doc_id: str, text: str, progress: Callable[[str, int, int, int], None] | None
    ) -> Iterator[ChunkedBatch]:
        pieces: list[tuple[str, int, str, int, int]] = []
        size = tokens = 0
        if progress is not None:
            progress(doc_id, 0, len(text), 0)
        for position, (start, end) in enumerate(self._spans(self._offset_windows(text))):
            pieces.append((doc_id, position, text[start:end], start, end))
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

    def _chunks(self, pieces: list[tuple[str, int, str, int, int]]) -> ChunkedBatch:
        """Chunks of (doc_id, position, text, start, end) pieces, each re-tokenised with
        special tokens (in bounded calls) and counted."""
        input_ids: list[list[int]] = []
        for group in _bounded_groups([p[2] for p in pieces]):
            input_ids.extend(
                self.tokenizer(
                    group,
                    add_special_tokens=True,
                    return_attention_mask=False,
                    return_token_type_ids=False,
                )["input_ids"]
            )
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
            for (doc_id, position, text, start, end), ids in zip(pieces, input_ids, strict=True)
        ]
        truncated = sum(1 for c in chunks if c.n_tokens > self.max_seq_length)
        return ChunkedBatch(chunks, truncated)

    def _offsets(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Per text, an (n_tokens, 2) array of character offsets, tokenised segment by
        segment (offsets shifted back to the whole text)."""
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
                per_text[i].append(offs + start)
        return [
            np.concatenate(parts) if parts else np.zeros((0, 2), np.int64) for parts in per_text
        ]

    def _offset_windows(self, text: str) -> Iterator[np.ndarray]:
        """The character offsets of one long text's tokens, a window of segments at a time."""
        cuts = _segments(text, min(SEGMENT_CHARS, self.window_chars))
        for group in _bounded_groups(cuts, key=lambda cut: range(*cut), chars=self.window_chars):
            arrays = self._offset_mapping([text[start:end] for start, end in group])
            yield np.concatenate(
                [offs + start for (start, _), offs in zip(group, arrays, strict=True)]
            )

    def _offset_mapping(self, texts: list[str]) -> list[np.ndarray]:
        enc = self.tokenizer(
            texts,
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return [np.asarray(offs, dtype=np.int64).reshape(-1, 2) for offs in enc["offset_mapping"]]

    def _spans(self, windows: Iterable[np.ndarray]) -> Iterator[tuple[int, int]]:
        """Character spans of the token windows of one document, whose token offsets
        arrive in consecutive arrays (`windows`). A span is cut as soon as the tokens it
        and its boundary search need are known; tokens before the current chunk's start
        are dropped, so what is held is one window plus one chunk."""
        arrays = iter(windows)
        buf = np.zeros((0, 2), np.int64)  # the offsets of tokens base, base + 1, ...
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
            yield int(buf[s][0]), int(buf[e - 1][1])
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
