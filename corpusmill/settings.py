"""Configuration from the environment: one table of variables, documented in the README.

Dagster config (resource fields, asset config) takes its defaults from here, so a value
can be set once in the environment or per run in the launchpad.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from corpusmill.errors import ConfigError
from corpusmill.sources import DEFAULT_MAX_FILE_BYTES, PYDOC, source_label


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def _env_bool(name: str, default: bool) -> bool:
    raw = _env(name, "1" if default else "0").strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use 1/0, true/false)")


def _env_int(name: str, default: int) -> int:
    raw = _env(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None


@dataclass(frozen=True)
class Settings:
    db: str = "./data/lancedb"
    sources: tuple[str, ...] = (PYDOC,)
    model: str = ""  # empty: the packaged all-MiniLM-L6-v2
    device: str = "auto"
    dtype: str = "auto"
    max_batch_tokens: int = 0  # 0: 4096 on CPU, 32768 on CUDA
    tokenize_threads: int = 0  # 0: 1 on CPU, up to 8 on CUDA
    compile: bool = False  # torch.compile: 30-90 s per run, then ~1.1x on CPU
    pack_linear: bool = True  # CPU: Linear layers on oneDNN-packed weights (1.06-1.12x)
    chunk_tokens: int = 200
    chunk_overlap: int = 32
    inbox: str = "./data/inbox"
    sensor_interval: int = 15  # seconds between inbox sensor ticks
    sensor_run_timeout: int = 3600  # an inbox run older than this is failed and retried
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    reranker: str = ""  # empty: score pairs with the bi-encoder, and say so
    queries: str = ""  # empty: the built-in queries for the Python docs corpus
    rerank_k: int = 50
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            db=_env("CORPUSMILL_DB", cls.db),
            sources=tuple(
                s.strip() for s in _env("CORPUSMILL_SOURCES", PYDOC).split(",") if s.strip()
            ),
            model=_env("CORPUSMILL_MODEL", ""),
            device=_env("CORPUSMILL_DEVICE", cls.device),
            dtype=_env("CORPUSMILL_DTYPE", cls.dtype),
            max_batch_tokens=_env_int("CORPUSMILL_MAX_BATCH_TOKENS", cls.max_batch_tokens),
            compile=_env_bool("CORPUSMILL_COMPILE", cls.compile),
            pack_linear=_env_bool("CORPUSMILL_PACK_LINEAR", cls.pack_linear),
            tokenize_threads=_env_int("CORPUSMILL_TOKENIZE_THREADS", cls.tokenize_threads),
            chunk_tokens=_env_int("CORPUSMILL_CHUNK_TOKENS", cls.chunk_tokens),
            chunk_overlap=_env_int("CORPUSMILL_CHUNK_OVERLAP", cls.chunk_overlap),
            inbox=_env("CORPUSMILL_INBOX", cls.inbox),
            sensor_interval=_env_int("CORPUSMILL_SENSOR_INTERVAL", cls.sensor_interval),
            sensor_run_timeout=_env_int("CORPUSMILL_SENSOR_RUN_TIMEOUT", cls.sensor_run_timeout),
            max_file_bytes=_env_int("CORPUSMILL_MAX_FILE_BYTES", cls.max_file_bytes),
            reranker=_env("CORPUSMILL_RERANKER", ""),
            queries=_env("CORPUSMILL_QUERIES", ""),
            rerank_k=_env_int("CORPUSMILL_RERANK_K", cls.rerank_k),
        )


def parse_source(entry: str) -> tuple[str, str]:
    """`pydoc`, `PATH`, or `LABEL=PATH` -> (spec, label).

    The label is what rows carry in their `source` column and what `--source` filters on;
    by default it is `pydoc` or the absolute path.
    """
    entry = entry.strip()
    if not entry:
        raise ConfigError("empty source entry (CORPUSMILL_SOURCES is a comma-separated list)")
    if "=" in entry and not entry.startswith(("/", ".")):
        label, spec = entry.split("=", 1)
        return spec, label
    return entry, source_label(entry)


def default_batch_tokens(device: str) -> int:
    """Measured on MiniLM-L6: 4k padded tokens per batch keeps a 2-core CPU's caches warm;
    a GPU needs wide batches to fill its SMs."""
    return 32768 if device == "cuda" else 4096


def default_tokenize_threads(device: str) -> int:
    """Measured on an H100 (docs/BENCHMARKS.md): one tokenising thread feeds MiniLM-L6 at
    ~0.25M tokens/s while the GPU could take ~4M, so on CUDA the engine tokenises on
    several threads. On a CPU the model needs every core and tokenising is ~5% of the
    work, so one thread."""
    if device != "cuda":
        return 1
    return max(1, min(8, (os.cpu_count() or 2) - 2))
