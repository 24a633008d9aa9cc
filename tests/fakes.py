"""FAKE ENCODER, for unit tests of batching logic only: not a model.

A deterministic hash encoder with the same interface as `TransformerEncoder`
(`tokenize`, `forward`, `pad_id`). It counts the batches it sees and can be told to raise
`torch.cuda.OutOfMemoryError` above a padded-token budget, to test the OOM back-off.
`FakeLaunchingEncoder` adds a `launch` whose rows arrive late, to test launch-ahead.
"""

from __future__ import annotations

import hashlib
import threading

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
    """FAKE, as above, with `launch`: rows come back as a pending handle, like a GPU batch
    still running. A batch's `wait` returns only once the next batch has been launched (or
    the last of `launches` has), so an engine that waits for a batch before launching the
    next one never gets its rows: after `timeout_s` its `wait` raises. Records how many
    launched batches were not yet waited for at each launch."""

    def __init__(self, launches: int, timeout_s: float = 10.0, **kw) -> None:
        super().__init__(**kw)
        self.launches = launches
        self.timeout_s = timeout_s
        self.launched = 0
        self.pending = 0
        self.max_pending = 0
        self._changed = threading.Condition()

    def launch(self, batch):
        rows = self.forward(batch)
        with self._changed:
            self.launched += 1
            self.pending += 1
            self.max_pending = max(self.max_pending, self.pending)
            self._changed.notify_all()
            return _FakePending(self, rows, self.launched - 1)


class _FakePending:
    def __init__(self, owner: FakeLaunchingEncoder, rows: np.ndarray, index: int) -> None:
        self.owner, self.rows, self.index = owner, rows, index

    def wait(self) -> np.ndarray:
        owner = self.owner
        with owner._changed:
            ran_ahead = owner._changed.wait_for(
                lambda: owner.launched > self.index + 1 or owner.launched >= owner.launches,
                owner.timeout_s,
            )
            if not ran_ahead:
                raise AssertionError(
                    f"batch {self.index}'s rows were waited for before batch "
                    f"{self.index + 1} was launched"
                )
            owner.pending -= 1
        return self.rows
