"""Token-budget batch planning: pure functions, no torch.

A batch is bounded by its *padded* token count (rows x longest row), not by a count of
texts, so a batch of short chunks is wide and a batch of long ones is narrow, and memory
per forward pass is predictable. Sorting by length first keeps padding small.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class BatchPlan:
    batches: list[list[int]]  # indices into the input, each batch longest first
    real_tokens: int
    padded_tokens: int

    @property
    def padding_fraction(self) -> float:
        return 0.0 if self.padded_tokens == 0 else 1.0 - self.real_tokens / self.padded_tokens


def plan_batches(
    lengths: Sequence[int], max_batch_tokens: int, max_batch_size: int | None = None
) -> BatchPlan:
    """Group indices so that len(batch) * max(length in batch) <= max_batch_tokens.

    Inputs are ordered longest first (ties broken by index, so the plan is deterministic):
    the first batch is the largest allocation, so an out-of-memory shows up at once rather
    than at the end of a partition. A single input longer than the budget gets a batch of
    its own.
    """
    if max_batch_tokens < 1:
        raise ValueError("max_batch_tokens must be >= 1")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    padded = 0
    for i in order:
        n = max(1, lengths[i])
        new_width = max(width, n)
        too_many = max_batch_size is not None and len(current) >= max_batch_size
        if current and (new_width * (len(current) + 1) > max_batch_tokens or too_many):
            batches.append(current)
            padded += width * len(current)
            current, new_width = [], n
        current.append(i)
        width = new_width
    if current:
        batches.append(current)
        padded += width * len(current)
    return BatchPlan(batches, sum(max(1, n) for n in lengths), padded)


def split_batch(
    indices: list[int], lengths: Sequence[int], max_batch_tokens: int
) -> list[list[int]]:
    """Re-plan one batch under a smaller budget (after an out-of-memory)."""
    sub = plan_batches([lengths[i] for i in indices], max_batch_tokens)
    return [[indices[j] for j in b] for b in sub.batches]
