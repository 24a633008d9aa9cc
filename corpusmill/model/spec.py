"""ModelSpec: which model to load and how to run it, as plain values.

A spec is what configuration turns into (`corpusmill.config.Settings.embedder_spec()`),
what a Dagster resource holds, and what a distributed worker receives to build its own
resident copy: it is small, frozen and picklable, and loading it is `Model(spec)`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

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

    @property
    def configured(self) -> bool:
        """A cross-encoder with no path is "not configured" (the bi-encoder scores instead);
        an embedder always is (its default is the packaged model)."""
        return self.kind == "embedder" or bool(self.path)

    def with_(self, **changes) -> ModelSpec:
        return replace(self, **changes)
