"""What goes into the engine's forward: inputs already tokenised, and padded batches of them."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True, eq=False)
class TokenIds:
    """An input already tokenised by the encoder's own tokenizer: special tokens included,
    within the model's sequence limit. Used as is, never re-tokenised.

    `ids` is a list, or a numpy view into the ids a scan of `chunks` read (no Python int
    per token: a batch of such rows is collated by one `np.concatenate`)."""

    ids: Sequence[int] | np.ndarray

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TokenIds) and np.array_equal(self.ids, other.ids)

    # Unhashable, as the list it may hold.
    __hash__ = None  # type: ignore[assignment]


def collate(token_lists: Sequence[dict[str, list[int]]], pad_id: int, pin: bool = False) -> dict:
    """Right-pad a batch to its longest row; returns torch tensors plus the attention mask.

    Filled through one flat numpy array and a boolean mask rather than a tensor per row:
    ~6x faster, which matters on a GPU, where this runs for ~100k tokens/s in one thread.
    """
    import torch

    n = len(token_lists)
    lengths = np.fromiter((len(t["input_ids"]) for t in token_lists), dtype=np.int64, count=n)
    width = int(lengths.max())
    mask = np.arange(width)[None, :] < lengths[:, None]
    total = int(lengths.sum())

    def padded(key: str, fill: int) -> torch.Tensor:
        out = np.full((n, width), fill, dtype=np.int64)
        out[mask] = _flat(token_lists, key, total)
        return torch.from_numpy(out)

    batch = {
        "input_ids": padded("input_ids", pad_id),
        "attention_mask": torch.from_numpy(mask.astype(np.int64)),
    }
    if any("token_type_ids" in t for t in token_lists):
        batch["token_type_ids"] = padded("token_type_ids", 0)
    if pin:
        batch = {k: v.pin_memory() for k, v in batch.items()}
    return batch


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError)


def collate_packed(token_lists: Sequence[dict[str, list[int]]]) -> dict:
    """A batch as its sequences' tokens end to end, no padding: `input_ids`, `position_ids`
    (0.. within each sequence) and, when the inputs have them, `token_type_ids`, all of
    shape (tokens,), and `lengths` (sequences,). For an encoder whose forward takes packed
    rows (`packed_batches`: model/bert_cpu.py)."""
    import torch

    n = len(token_lists)
    lengths = np.fromiter((len(t["input_ids"]) for t in token_lists), dtype=np.int64, count=n)
    total = int(lengths.sum())
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)

    batch = {
        "input_ids": torch.from_numpy(_flat(token_lists, "input_ids", total)),
        "position_ids": torch.from_numpy(np.arange(total, dtype=np.int64) - starts),
        "lengths": torch.from_numpy(lengths),
    }
    if any("token_type_ids" in t for t in token_lists):
        batch["token_type_ids"] = torch.from_numpy(_flat(token_lists, "token_type_ids", total))
    return batch


def _flat(token_lists: Sequence[dict[str, list[int]]], key: str, total: int) -> np.ndarray:
    """Every row's `key` end to end, as int64; a row without it (stored ids of a single
    sequence carry no token type ids) counts as zeros. Rows that are all numpy arrays (ids
    read from `chunks`) are joined by one `np.concatenate`; lists in one C-level pass over
    the rows (itertools.chain), ~2x faster than a nested generator on 4k-token batches."""
    if all(isinstance(t.get(key), np.ndarray) for t in token_lists):
        return np.concatenate([t[key] for t in token_lists]).astype(np.int64, copy=False)
    rows = (t[key] if key in t else itertools.repeat(0, len(t["input_ids"])) for t in token_lists)
    return np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=total)
