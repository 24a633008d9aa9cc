"""ModelSpec: which model to load and how to run it, as plain values.

A spec is what configuration turns into (`corpusmill.config.Settings.embedder_spec()`),
what a Dagster resource holds, and what a distributed worker receives to build its own
resident copy: it is small, frozen and picklable, and loading it is `Model(spec)`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from corpusmill.errors import ConfigError

Kind = Literal["embedder", "cross-encoder"]


@dataclass(frozen=True)
class ModelSpec:
    path: str = ""  # a local model folder; "" = the packaged all-MiniLM-L6-v2 (embedder)
    kind: Kind = "embedder"
    model_id: str = ""  # "" = the hub id of the packaged model, else the folder name
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    max_batch_tokens: int = 0  # padded tokens per batch; 0 = 4096 on CPU, 32768 on CUDA
    max_seq_length: int = 0  # 0 = the model's own limit
    compile: bool = False  # torch.compile: 30-90 s per run, then faster (opt-in)
    pack_linear: bool = True  # CPU: Linear layers on oneDNN-packed weights
    tokenize_threads: int = 0  # 0 = 1 on CPU, up to 8 on CUDA
    forward: str = "auto"  # auto (probed at load) | bert_cpu | transformers
    cpu_streams: int = 0  # CPU forward streams; 0 = one per torch thread (up to 8)
    cache_dir: str = ""  # where the forward probe's result is kept; "" = probe every load

    def __post_init__(self) -> None:
        # Fail where the value is set, naming the setting, not deep in the engine.
        for name, setting in (
            ("max_batch_tokens", "CORPUSMILL_MAX_BATCH_TOKENS"),
            ("max_seq_length", "max_seq_length"),
            ("tokenize_threads", "CORPUSMILL_TOKENIZE_THREADS"),
            ("cpu_streams", "CORPUSMILL_CPU_STREAMS"),
        ):
            value = getattr(self, name)
            if value < 0:
                raise ConfigError(f"{setting}={value} must be >= 0 (0: automatic)")

    @property
    def configured(self) -> bool:
        """A cross-encoder with no path is "not configured" (the bi-encoder scores instead);
        an embedder always is (its default is the packaged model)."""
        return self.kind == "embedder" or bool(self.path)

    def with_(self, **changes) -> ModelSpec:
        return replace(self, **changes)
