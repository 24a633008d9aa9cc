"""Configuration: every setting, its default and its environment variable, in one place.

An entry point (definitions.py for Dagster, app/cli.py for the shell) calls
`Settings.from_env()` once and passes the `Settings` object down whole; nothing else reads
the environment (tests/test_layers.py checks). An asset config field is a per-run
override of the setting of the same name (`Settings.with_overrides`). The README's
configuration table lists the same variables.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from corpusmill.errors import ConfigError
from corpusmill.lifecycle.spec import GateSpec
from corpusmill.model.spec import ModelSpec
from corpusmill.sources import (
    DEFAULT_EXTRACT_MEMORY_MB,
    DEFAULT_EXTRACT_TIMEOUT_S,
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_PAGES,
    PYDOC,
    ReadLimits,
    ReadOptions,
    RecordFields,
)

# BEIR SciFact as the workplace lays it out: ../shared/eval/scifact beside the repository.
EXECUTORS = ("local", "ray")
PROMOTIONS = ("auto", "manual")  # when a complete, checked generation goes live
DEFAULT_EVAL_DATA = str(Path(__file__).resolve().parents[2] / "shared" / "eval" / "scifact")


@dataclass(frozen=True)
class Settings:
    db: str = "./data/lancedb"  # a directory, or s3://bucket/prefix (s3+ddb://... too)
    # Passed to every lancedb.connect / lance commit: endpoint, region, credentials,
    # allow_http (the object_store keys LanceDB documents). JSON in the environment.
    storage_options: dict[str, str] = field(default_factory=dict)
    executor: str = "local"  # local | ray: where `embeddings` runs the model
    ray_workers: int = 2  # Ray actors, each with its own resident model
    ray_address: str = ""  # empty: start a private local cluster on loopback
    sources: tuple[str, ...] = (PYDOC,)
    model: str = ""  # empty: the packaged all-MiniLM-L6-v2
    device: str = "auto"
    dtype: str = "auto"
    max_batch_tokens: int = 0  # 0: 4096 on CPU, 32768 on CUDA
    tokenize_threads: int = 0  # 0: 1 on CPU, up to 8 on CUDA
    compile: bool = False  # torch.compile: 30-90 s per run, then faster on long runs
    pack_linear: bool = True  # CPU: Linear layers on oneDNN-packed weights
    forward: str = "auto"  # auto: probed at load and cached | bert_cpu | transformers
    cpu_streams: int = 0  # CPU forward streams; 0: one per torch thread (up to 8)
    cache_dir: str = "~/.cache/corpusmill"  # probe results, kernel shapes; "": none kept
    chunk_tokens: int = 200
    chunk_overlap: int = 32
    inbox: str = "./data/inbox"
    sensor_interval: int = 15  # seconds between inbox sensor ticks
    sensor_run_timeout: int = 3600  # an inbox run older than this is failed and retried
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    # Per PDF or Word file, parsed in a worker process: more pages is a quarantine, so is
    # a file that takes longer (seconds) or needs more address space (MB) to parse.
    max_pages: int = DEFAULT_MAX_PAGES
    extract_timeout: float = DEFAULT_EXTRACT_TIMEOUT_S
    extract_memory_mb: int = DEFAULT_EXTRACT_MEMORY_MB
    reranker: str = ""  # empty: score pairs with the bi-encoder, and say so
    queries: str = ""  # empty: the built-in queries for the Python docs corpus
    rerank_k: int = 50
    # `corpusmill serve`: the bearer token every request but /health must carry (required
    # off loopback)
    api_token: str = field(default="", repr=False)
    # `corpusmill serve` back-pressure (app/limits.py): past an in-flight bound, 429.
    # 64 requests: at most 64 bodies of up to 2 MiB held at once. 262,144 tokens: about
    # 13 s of work for MiniLM on 2 CPU cores (~20k tokens/s), the longest a request waits.
    serve_max_inflight: int = 64
    serve_max_inflight_tokens: int = 262144
    # One request: 2,048 inputs (the OpenAI API's own array bound), 131,072 tokens.
    serve_max_inputs: int = 2048
    serve_max_request_tokens: int = 131072
    eval_data: str = DEFAULT_EVAL_DATA  # a BEIR folder
    eval_db: str = "./data/eval-scifact"  # scratch store of `corpusmill eval`
    # The eval chunks with 254 tokens and no overlap (MiniLM's 256-token window minus [CLS]
    # and [SEP]): a document's first chunk is exactly the window MTEB encodes.
    # CORPUSMILL_CHUNK_TOKENS / _OVERLAP, when set, override these too.
    eval_chunk_tokens: int = 254
    eval_chunk_overlap: int = 0
    # Model generations (corpusmill.lifecycle): `auto` makes the configured model's
    # generation live as soon as it is complete and its checks (and the gate) pass;
    # `manual` waits for `corpusmill generations promote`.
    promote: str = "auto"
    gate_data: str = ""  # a BEIR folder: promotion compares nDCG@10 on it; "": no gate
    gate_source: str = "scifact"  # the source label its corpus is ingested under
    gate_tolerance: float = 0.01  # how far below the live nDCG@10 a new generation may be
    # The Dagster instance `corpusmill ingest` records its runs in (DAGSTER_HOME, Dagster's
    # own variable); empty: a throwaway in-memory instance.
    dagster_home: str = ""

    def __post_init__(self) -> None:
        checks = (
            ("CORPUSMILL_CHUNK_TOKENS", self.chunk_tokens, 1),
            ("CORPUSMILL_CHUNK_OVERLAP", self.chunk_overlap, 0),
            ("CORPUSMILL_MAX_FILE_BYTES", self.max_file_bytes, 0),
            ("CORPUSMILL_MAX_BATCH_TOKENS", self.max_batch_tokens, 0),
            ("CORPUSMILL_TOKENIZE_THREADS", self.tokenize_threads, 0),
            ("CORPUSMILL_CPU_STREAMS", self.cpu_streams, 0),
            ("CORPUSMILL_RERANK_K", self.rerank_k, 1),
            ("CORPUSMILL_SENSOR_INTERVAL", self.sensor_interval, 1),
            ("CORPUSMILL_SENSOR_RUN_TIMEOUT", self.sensor_run_timeout, 1),
            ("CORPUSMILL_MAX_PAGES", self.max_pages, 1),
            # Below this the worker's own interpreter, with pypdf and lxml, cannot start.
            ("CORPUSMILL_EXTRACT_MEMORY_MB", self.extract_memory_mb, 512),
            ("CORPUSMILL_SERVE_MAX_INFLIGHT", self.serve_max_inflight, 1),
            ("CORPUSMILL_SERVE_MAX_INFLIGHT_TOKENS", self.serve_max_inflight_tokens, 1),
            ("CORPUSMILL_SERVE_MAX_INPUTS", self.serve_max_inputs, 1),
            ("CORPUSMILL_SERVE_MAX_REQUEST_TOKENS", self.serve_max_request_tokens, 1),
        )
        for name, value, least in checks:
            if value < least:
                raise ConfigError(f"{name}={value} must be >= {least}")
        if self.promote not in PROMOTIONS:
            raise ConfigError(
                f"CORPUSMILL_PROMOTE={self.promote!r}: use one of {', '.join(PROMOTIONS)}"
            )
        if not 0 <= self.gate_tolerance <= 1:
            raise ConfigError(
                f"CORPUSMILL_GATE_TOLERANCE={self.gate_tolerance} must be between 0 and 1 "
                "(nDCG@10 points)"
            )
        if self.gate_data:
            gate = Path(self.gate_data).expanduser()
            missing = [p for p in ("queries.jsonl", "qrels/test.tsv") if not (gate / p).is_file()]
            if missing:
                raise ConfigError(
                    f"CORPUSMILL_GATE_DATA={self.gate_data!r} is not a BEIR folder (no "
                    f"{', '.join(missing)}); point it at one, or leave it empty for no gate"
                )
        if self.queries and not Path(self.queries).expanduser().is_file():
            # Before any model work: `rerank_scores` reads it only after the embeddings.
            raise ConfigError(
                f"CORPUSMILL_QUERIES={self.queries!r} does not exist; set it to a JSONL file "
                'of {"id", "text"} records, or leave it empty for the built-in queries'
            )
        if not 0 < self.extract_timeout < math.inf:
            raise ConfigError(
                f"CORPUSMILL_EXTRACT_TIMEOUT={self.extract_timeout} must be a number of seconds > 0"
            )
        if self.serve_max_request_tokens > self.serve_max_inflight_tokens:
            raise ConfigError(
                f"CORPUSMILL_SERVE_MAX_REQUEST_TOKENS={self.serve_max_request_tokens} is more "
                f"than CORPUSMILL_SERVE_MAX_INFLIGHT_TOKENS={self.serve_max_inflight_tokens}: "
                "such a request could never be admitted"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = _Env(os.environ if environ is None else environ)
        return cls(
            db=env.text("CORPUSMILL_DB", cls.db),
            storage_options=env.json_object("CORPUSMILL_STORAGE_OPTIONS"),
            executor=env.choice("CORPUSMILL_EXECUTOR", cls.executor, EXECUTORS),
            ray_workers=env.integer("CORPUSMILL_RAY_WORKERS", cls.ray_workers),
            ray_address=env.text("CORPUSMILL_RAY_ADDRESS", cls.ray_address),
            sources=tuple(
                s.strip() for s in env.text("CORPUSMILL_SOURCES", PYDOC).split(",") if s.strip()
            ),
            model=env.text("CORPUSMILL_MODEL", cls.model),
            device=env.text("CORPUSMILL_DEVICE", cls.device),
            dtype=env.text("CORPUSMILL_DTYPE", cls.dtype),
            max_batch_tokens=env.integer("CORPUSMILL_MAX_BATCH_TOKENS", cls.max_batch_tokens),
            tokenize_threads=env.integer("CORPUSMILL_TOKENIZE_THREADS", cls.tokenize_threads),
            compile=env.flag("CORPUSMILL_COMPILE", cls.compile),
            pack_linear=env.flag("CORPUSMILL_PACK_LINEAR", cls.pack_linear),
            forward=env.text("CORPUSMILL_FORWARD", cls.forward).strip().lower(),
            cpu_streams=env.integer("CORPUSMILL_CPU_STREAMS", cls.cpu_streams),
            cache_dir=env.text("CORPUSMILL_CACHE_DIR", cls.cache_dir),
            chunk_tokens=env.integer("CORPUSMILL_CHUNK_TOKENS", cls.chunk_tokens),
            chunk_overlap=env.integer("CORPUSMILL_CHUNK_OVERLAP", cls.chunk_overlap),
            inbox=env.text("CORPUSMILL_INBOX", cls.inbox),
            sensor_interval=env.integer("CORPUSMILL_SENSOR_INTERVAL", cls.sensor_interval),
            sensor_run_timeout=env.integer("CORPUSMILL_SENSOR_RUN_TIMEOUT", cls.sensor_run_timeout),
            max_file_bytes=env.integer("CORPUSMILL_MAX_FILE_BYTES", cls.max_file_bytes),
            max_pages=env.integer("CORPUSMILL_MAX_PAGES", cls.max_pages),
            extract_timeout=env.number("CORPUSMILL_EXTRACT_TIMEOUT", cls.extract_timeout),
            extract_memory_mb=env.integer("CORPUSMILL_EXTRACT_MEMORY_MB", cls.extract_memory_mb),
            reranker=env.text("CORPUSMILL_RERANKER", cls.reranker),
            queries=env.text("CORPUSMILL_QUERIES", cls.queries),
            rerank_k=env.integer("CORPUSMILL_RERANK_K", cls.rerank_k),
            api_token=env.text("CORPUSMILL_API_TOKEN", ""),
            serve_max_inflight=env.integer("CORPUSMILL_SERVE_MAX_INFLIGHT", cls.serve_max_inflight),
            serve_max_inflight_tokens=env.integer(
                "CORPUSMILL_SERVE_MAX_INFLIGHT_TOKENS", cls.serve_max_inflight_tokens
            ),
            serve_max_inputs=env.integer("CORPUSMILL_SERVE_MAX_INPUTS", cls.serve_max_inputs),
            serve_max_request_tokens=env.integer(
                "CORPUSMILL_SERVE_MAX_REQUEST_TOKENS", cls.serve_max_request_tokens
            ),
            eval_data=env.text("CORPUSMILL_EVAL_DATA", cls.eval_data),
            eval_db=env.text("CORPUSMILL_EVAL_DB", cls.eval_db),
            eval_chunk_tokens=env.integer("CORPUSMILL_CHUNK_TOKENS", cls.eval_chunk_tokens),
            eval_chunk_overlap=env.integer("CORPUSMILL_CHUNK_OVERLAP", cls.eval_chunk_overlap),
            promote=env.choice("CORPUSMILL_PROMOTE", cls.promote, PROMOTIONS),
            gate_data=env.text("CORPUSMILL_GATE_DATA", cls.gate_data),
            gate_source=env.text("CORPUSMILL_GATE_SOURCE", cls.gate_source),
            gate_tolerance=env.number("CORPUSMILL_GATE_TOLERANCE", cls.gate_tolerance),
            dagster_home=env.text("DAGSTER_HOME", cls.dagster_home),
        )

    def with_overrides(self, values: Mapping[str, Any]) -> Settings:
        """These settings with `values` in their place: each key named like a setting
        whose value is not None replaces it (an asset config field left unset is None);
        other keys are not settings (an asset's own options) and are left out. Checked
        like the environment's values."""
        names = {f.name for f in fields(self)}
        changes: dict[str, Any] = {
            name: tuple(value) if name == "sources" else value
            for name, value in values.items()
            if name in names and value is not None
        }
        return replace(self, **changes) if changes else self

    def read_limits(self) -> ReadLimits:
        """The per-file limits of the parsed formats (PDF, Word)."""
        return ReadLimits(
            max_pages=self.max_pages,
            timeout_s=float(self.extract_timeout),
            memory_mb=self.extract_memory_mb,
        )

    def read_options(self, fields: RecordFields | None = None) -> ReadOptions:
        """How sources are read: `fields` (an asset's record-field config) with these
        settings' size and per-file limits and the store's object-store options."""
        return ReadOptions(
            fields=fields or RecordFields(),
            max_file_bytes=self.max_file_bytes,
            limits=self.read_limits(),
            storage_options=dict(self.storage_options),
        )

    def embedder_spec(self) -> ModelSpec:
        return ModelSpec(
            path=self.model,
            kind="embedder",
            device=self.device,
            dtype=self.dtype,
            max_batch_tokens=self.max_batch_tokens,
            compile=self.compile,
            pack_linear=self.pack_linear,
            tokenize_threads=self.tokenize_threads,
            forward=self.forward,
            cpu_streams=self.cpu_streams,
            cache_dir=str(Path(self.cache_dir).expanduser()) if self.cache_dir else "",
        )

    def gate(self) -> GateSpec | None:
        """The promotion gate, if a labelled set is configured."""
        if not self.gate_data:
            return None
        return GateSpec(self.gate_data, self.gate_source, self.gate_tolerance)

    def reranker_spec(self) -> ModelSpec:
        """The cross-encoder; `path` empty means none is configured."""
        return self.embedder_spec().with_(path=self.reranker, kind="cross-encoder")


def debug_requested(environ: Mapping[str, str] | None = None) -> bool:
    """CORPUSMILL_DEBUG, read on its own: the CLI needs it before the other settings, to
    show the traceback of an invalid one. Anything but a true value is off."""
    value = (os.environ if environ is None else environ).get("CORPUSMILL_DEBUG", "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def dagster_home(environ: Mapping[str, str] | None = None) -> str:
    """DAGSTER_HOME read on its own, as an absolute path ('' when unset): for what Dagster
    builds from dagster.yaml and so cannot be handed Settings (the instance's event log,
    dagster_corpusmill/event_log.py)."""
    return absolute_home((os.environ if environ is None else environ).get("DAGSTER_HOME", ""))


def absolute_home(home: str) -> str:
    """A Dagster home as corpusmill opens it: `~` expanded, relative to the working
    directory; '' stays ''."""
    return os.path.abspath(os.path.expanduser(home)) if home else ""


def quiet_lance_query_warnings() -> None:
    """lance logs a deprecation warning per query whose select() omits `_distance` or
    `_score`; the 900 queries of an eval would bury its result lines. Call before the
    first query (an explicit LANCEDB_LOG wins)."""
    os.environ.setdefault("LANCEDB_LOG", "error")


def prepare_process() -> None:
    """Process-wide settings an entry point applies before torch or transformers load.

    - Models are local directories; nothing may reach for a model hub (the loaders also
      pass `local_files_only=True`).
    - OpenMP worker threads spin between torch ops by default; on a shared 2-core machine a
      spinning worker burns the core the other needs, and MiniLM ran 2-3x slower
      (docs/BENCHMARKS.md). libgomp reads this once, when torch is first imported.
    - The `tokenizers` library's thread pool stays off: the engine tokenises on threads of
      its own beside the forward's streams. The chunker, which runs alone in its step,
      turns it on for its own calls whatever the setting (`tokenizer_pool`).
    An explicit setting in the environment wins over each of these.
    """
    for name, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("TRANSFORMERS_OFFLINE", "1"),
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ("TRANSFORMERS_VERBOSITY", "error"),
        ("TOKENIZERS_PARALLELISM", "false"),
        ("OMP_WAIT_POLICY", "PASSIVE"),
    ):
        os.environ.setdefault(name, value)


# The process whose `tokenizers` calls first ran on the library's thread pool.
_POOL_PID: int | None = None


@contextlib.contextmanager
def tokenizer_pool() -> Iterator[None]:
    """Lets the `tokenizers` calls inside spread a batch over every core (the library reads
    TOKENIZERS_PARALLELISM on each call); the setting is put back after. For a caller that
    has the cores to itself (the chunker): `prepare_process` keeps the pool off otherwise.
    A process forked after the pool ran has the pool's state but not its threads, and its
    first call on the pool would hang: there the pool stays off (the library turns it off
    in such a child too, when the variable is unset)."""
    global _POOL_PID
    name = "TOKENIZERS_PARALLELISM"
    if _POOL_PID not in (None, os.getpid()):
        yield
        return
    _POOL_PID = os.getpid()
    before = os.environ.get(name)
    os.environ[name] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


class _Env:
    """Typed reads of environment variables; an empty value counts as unset."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def text(self, name: str, default: str) -> str:
        value = self.environ.get(name)
        return default if value is None or value == "" else value

    def integer(self, name: str, default: int) -> int:
        return self._parsed(name, default, int, "an integer")

    def number(self, name: str, default: float) -> float:
        return self._parsed(name, default, float, "a number")

    def _parsed(self, name: str, default: Any, kind: Any, what: str) -> Any:
        raw = self.text(name, str(default))
        try:
            return kind(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not {what}") from None

    def choice(self, name: str, default: str, options: tuple[str, ...]) -> str:
        value = self.text(name, default).strip().lower()
        if value not in options:
            raise ConfigError(f"{name}={value!r}: use one of {', '.join(options)}")
        return value

    def json_object(self, name: str) -> dict[str, str]:
        """A JSON object of string values (object_store options are all strings)."""
        raw = self.text(name, "{}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ConfigError(
                f'{name} is not JSON ({e}); e.g. {name}=\'{{"region": "us-east-1"}}\''
            ) from None
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a JSON object of option -> value")
        return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}

    def flag(self, name: str, default: bool) -> bool:
        raw = self.text(name, "1" if default else "0").strip().lower()
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={raw!r} is not a boolean (use 1/0, true/false)")
