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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from corpusmill.errors import ConfigError
from corpusmill.ids import chunk_id, content_hash

CHUNKER_VERSION = "tok-v1"
_BOUNDARY_SEARCH = 24  # tokens to look back for a word boundary before cutting mid-word
SEGMENT_CHARS = 64 * 1024  # a longer text is tokenised in segments of about this size
GROUP_CHARS = 1024 * 1024  # characters per tokenizer call


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

    @property
    def version(self) -> str:
        """Goes into every chunk id: changing size or overlap gives new ids."""
        return chunker_version(self.chunk_tokens, self.overlap)

    def chunk_documents(self, docs: Sequence[tuple[str, str]]) -> ChunkedBatch:
        """Chunk (doc_id, text) pairs. Texts are tokenised in bounded calls: a long text
        in segments cut at whitespace (a 10 MB single-line file tokenised whole held
        2.2 GB of encodings with a tiny model), many short ones batched together."""
        if not docs:
            return ChunkedBatch([], 0)
        offsets = self._offsets([text for _, text in docs])
        pieces: list[tuple[str, int, str, int, int]] = []
        for (doc_id, text), doc_offsets in zip(docs, offsets, strict=True):
            for position, (start, end) in enumerate(self._spans(doc_offsets)):  # type: ignore[arg-type]
                pieces.append((doc_id, position, text[start:end], int(start), int(end)))
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
            enc = self.tokenizer(
                [seg[2] for seg in group],
                add_special_tokens=False,
                return_offsets_mapping=True,
                return_attention_mask=False,
                return_token_type_ids=False,
            )
            for (i, start, _), offs in zip(group, enc["offset_mapping"], strict=True):
                per_text[i].append(np.asarray(offs, dtype=np.int64).reshape(-1, 2) + start)
        return [
            np.concatenate(parts) if parts else np.zeros((0, 2), np.int64) for parts in per_text
        ]

    def _spans(self, offsets: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        """Character spans of the token windows of one document."""
        n = len(offsets)
        spans: list[tuple[int, int]] = []
        start = 0
        while start < n:
            end = min(start + self.chunk_tokens, n)
            if end < n:
                end = self._back_to_boundary(offsets, start, end)
            spans.append((offsets[start][0], offsets[end - 1][1]))
            if end >= n:
                break
            nxt = max(start + 1, end - self.overlap)
            aligned = nxt
            while aligned < end and not _is_boundary(offsets, aligned):
                aligned += 1
            start = aligned if aligned < end or self.overlap == 0 else nxt
        return spans

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
