"""FAKE ENCODER, for unit tests of batching logic only: not a model.

A deterministic hash encoder with the same interface as `TransformerEncoder`
(`tokenize`, `forward`, `pad_id`). It counts the batches it sees and can be told to raise
`torch.cuda.OutOfMemoryError` above a padded-token budget, to test the OOM back-off.
`FakeLaunchingEncoder` adds a `launch` whose rows arrive late, to test launch-ahead.
"""

from __future__ import annotations

import hashlib
import threading
import time

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


class FakeLaunchingEncoder(FakeHashEncoder):
    """FAKE, as above, with `launch`: rows come back as a pending handle whose `wait` takes
    a while, like a GPU batch still running. Records how many launched batches were not
    yet waited for at each launch, so a test can tell whether launches ran ahead."""

    def __init__(self, wait_s: float = 0.02, **kw) -> None:
        super().__init__(**kw)
        self.wait_s = wait_s
        self.pending = 0
        self.max_pending = 0
        self._lock = threading.Lock()

    def launch(self, batch):
        rows = self.forward(batch)
        with self._lock:
            self.pending += 1
            self.max_pending = max(self.max_pending, self.pending)
        return _FakePending(self, rows)


class _FakePending:
    def __init__(self, owner: FakeLaunchingEncoder, rows: np.ndarray) -> None:
        self.owner, self.rows = owner, rows

    def wait(self) -> np.ndarray:
        time.sleep(self.owner.wait_s)
        with self.owner._lock:
            self.owner.pending -= 1
        return self.rows
