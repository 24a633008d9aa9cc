"""FAKE ENCODER, for unit tests of batching logic only: not a model.

A deterministic hash encoder with the same interface as `TransformerEncoder`
(`tokenize`, `forward`, `pad_id`). It counts the batches it sees and can be told to raise
`torch.cuda.OutOfMemoryError` above a padded-token budget, to test the OOM back-off.
"""

from __future__ import annotations

import hashlib

import numpy as np


class FakeHashEncoder:
    pad_id = 0

    def __init__(self, dim: int = 8, oom_above: int | None = None) -> None:
        self.dim = dim
        self.oom_above = oom_above
        self.batches: list[tuple[int, int]] = []  # (rows, width) per forward call
        self.oom_raised = 0

    def tokenize(self, texts):
        # one "token" per whitespace word, plus two for [CLS]/[SEP]
        return [
            {"input_ids": [101] + [hash_token(w) for w in str(t).split()] + [102]} for t in texts
        ]

    def forward(self, batch):
        import torch

        ids = batch["input_ids"]
        rows, width = ids.shape
        if self.oom_above is not None and rows * width > self.oom_above:
            self.oom_raised += 1
            raise torch.cuda.OutOfMemoryError("fake OOM")
        self.batches.append((rows, width))
        mask = batch["attention_mask"].numpy().astype(bool)
        out = np.zeros((rows, self.dim), dtype=np.float32)
        for r in range(rows):
            toks = ids[r].numpy()[mask[r]]
            digest = hashlib.sha256(toks.tobytes()).digest()
            out[r] = np.frombuffer(digest[: self.dim * 4], dtype=np.uint32) / 2**32
        return out


def hash_token(word: str) -> int:
    return 1000 + int.from_bytes(hashlib.blake2b(word.encode(), digest_size=2).digest(), "big")
