"""What flows through the engine: token-id inputs, padded batches, and the run's statistics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class TokenIds:
    """An input already tokenised by the encoder's own tokenizer: special tokens included,
    within the model's sequence limit. Used as is, never re-tokenised."""

    ids: Sequence[int]


@dataclass
class EngineStats:
    items: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    batches: int = 0
    pretokenized: int = 0  # items that arrived as TokenIds and skipped the tokenizer
    tokenize_seconds: float = 0.0
    forward_seconds: float = 0.0  # with launch_ahead: the time to queue the work, not run it
    device_wait_seconds: float = 0.0  # the writer waiting for launched rows (launch_ahead)
    sink_seconds: float = 0.0
    wall_seconds: float = 0.0
    oom_retries: int = 0
    final_max_batch_tokens: int = 0
    failed: dict[int, str] = field(default_factory=dict)  # global index -> reason

    @property
    def padding_fraction(self) -> float:
        return 0.0 if not self.padded_tokens else 1.0 - self.real_tokens / self.padded_tokens

    @property
    def tokens_per_second(self) -> float:
        return self.real_tokens / self.wall_seconds if self.wall_seconds else 0.0

    def as_metadata(self) -> dict[str, float | int]:
        return {
            "engine_items": self.items,
            "pretokenized_items": self.pretokenized,
            "tokens": self.real_tokens,
            "padding_fraction": round(self.padding_fraction, 4),
            "batches": self.batches,
            "tokens_per_s": round(self.tokens_per_second, 1),
            "forward_seconds": round(self.forward_seconds, 3),
            "tokenize_seconds": round(self.tokenize_seconds, 3),
            "device_wait_seconds": round(self.device_wait_seconds, 3),
            "write_seconds": round(self.sink_seconds, 3),
            "engine_seconds": round(self.wall_seconds, 3),
            "oom_retries": self.oom_retries,
            "failed_items": len(self.failed),
        }


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
        flat = np.fromiter((v for t in token_lists for v in t[key]), dtype=np.int64, count=total)
        out = np.full((n, width), fill, dtype=np.int64)
        out[mask] = flat
        return torch.from_numpy(out)

    batch = {
        "input_ids": padded("input_ids", pad_id),
        "attention_mask": torch.from_numpy(mask.astype(np.int64)),
    }
    if "token_type_ids" in token_lists[0]:
        batch["token_type_ids"] = padded("token_type_ids", 0)
    if pin:
        batch = {k: v.pin_memory() for k, v in batch.items()}
    return batch


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError)
