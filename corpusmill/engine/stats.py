"""What one engine run did: items, tokens, padding, time per stage, failures."""

from __future__ import annotations

from dataclasses import dataclass, field


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

    def add_forward(self, other: EngineStats) -> None:
        """Add another forward stream's counts (engine/streams.py): with several streams
        `forward_seconds` is their busy time summed, more than the wall time."""
        self.batches += other.batches
        self.real_tokens += other.real_tokens
        self.padded_tokens += other.padded_tokens
        self.forward_seconds += other.forward_seconds
        self.oom_retries += other.oom_retries

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
