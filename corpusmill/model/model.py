"""Model: one transformer, loaded once, resident until released, used through domain methods.

Everything that runs a model (the Dagster resources, the `Searcher`, the rerank scorer, the
query service, a distributed worker) holds a `Model` and calls `embed`, `embed_stream` or
`score` (the service through `micro_batcher`); nobody reaches for the torch module or the
batch engine behind it. Each of them reaches the forward through the engine.

Loading is in three lazy steps, each on first need, so a run pays only for what it uses:
    description  the folder's files: card, pooling, sequence limit   (milliseconds)
    tokenizer    what chunking needs                                  (~0.2 s)
    weights      the encoder on its device, the batch engine, warm-up (seconds)
A run whose chunks are all embedded already never loads the weights.
"""

from __future__ import annotations

import itertools
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from corpusmill.engine.microbatch import DEFAULT_MAX_BATCH, DEFAULT_WAIT_S, MicroBatcher
from corpusmill.engine.progress import ProgressMeter
from corpusmill.engine.runner import BatchEngine, EngineStats, Sink
from corpusmill.model.card import ModelCard
from corpusmill.model.files import ModelDescription, default_model_path, describe_model
from corpusmill.model.hardware import (
    default_batch_tokens,
    default_cpu_streams,
    default_tokenize_threads,
    default_window,
    dtype_label,
    resolve_device,
)
from corpusmill.model.numpy_forward import NumpyBertEmbedder, unsupported
from corpusmill.model.spec import ModelSpec
from corpusmill.model.tokenizer import Tokenizer

# Weight loads in this process, by kind: tests assert one load per run (or none).
LOADS: Counter[str] = Counter()
_loads_lock = threading.Lock()

# While the weights are not resident, queries of up to this many tokens in all are embedded
# by the float32 NumPy forward (model/numpy_forward.py) instead of importing torch for them:
# ~1 ms a token there (MiniLM-L6, 2 cores) against 2-3 s for `import torch` and the load.
NUMPY_QUERY_TOKENS = 1024

_WARM_SHORT = "warm up"
_WARM_LONG = "a longer warm-up text, so that the short one is padded"


class Model:
    """A resident model built from a `ModelSpec`. Thread-safe to load; cheap to construct."""

    def __init__(self, spec: ModelSpec | None = None) -> None:
        self.spec = spec or ModelSpec()
        self._lock = threading.RLock()
        self._description: ModelDescription | None = None
        self._tokens: Tokenizer | None = None
        self._encoder: Any = None
        self._engine: BatchEngine | None = None
        self._numpy: NumpyBertEmbedder | None = None
        self._numpy_tried = False  # `_numpy` None after a try: not for this model
        self._batchers: weakref.WeakSet[MicroBatcher] = weakref.WeakSet()
        self.load_seconds = 0.0
        self.warmup_seconds = 0.0

    # -- identity (files only) -----------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def configured(self) -> bool:
        return self.spec.configured

    @property
    def path(self) -> str:
        return self.spec.path or str(default_model_path())

    @property
    def description(self) -> ModelDescription:
        with self._lock:
            if self._description is None:
                self._description = describe_model(
                    self.path,
                    self.kind,
                    max_seq_length=self.spec.max_seq_length or None,
                    model_id=self.spec.model_id or None,
                )
            return self._description

    @property
    def card(self) -> ModelCard:
        return self.description.card

    @property
    def max_seq_length(self) -> int:
        return self.description.max_seq_length

    # -- tokenizer -------------------------------------------------------------------------
    @property
    def tokens(self) -> Tokenizer:
        with self._lock:
            if self._tokens is None:
                self._tokens = Tokenizer(self.description, cache_dir=self.spec.cache_dir)
            return self._tokens

    @property
    def tokenizer(self):
        """What the chunker measures chunks with: the Hugging Face tokenizer, or the same
        calls on the `tokenizers` library where they give the same ids and offsets
        (model/tokenizer.py; `tokens.hf` is always the Hugging Face one)."""
        return self.tokens.chunker

    @property
    def tokenizer_id(self) -> str:
        return self.tokens.fingerprint

    # -- weights ---------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._engine is not None

    def load(self) -> Model:
        """Load the weights (once; later calls return at once) and warm them up."""
        with self._lock:
            if self._engine is not None:
                return self
            from corpusmill.model.encoder import TransformerEncoder

            t0 = time.perf_counter()
            streams, stream_threads = self._streams()
            encoder = TransformerEncoder(
                self.path,
                kind=self.kind,
                device=self.spec.device,
                dtype=self.spec.dtype,
                compile=self.spec.compile,
                pack_linear=self.spec.pack_linear,
                description=self.description,
                tokenizer=self.tokens,
                forward=self.spec.forward,
                cache_dir=self.spec.cache_dir,
                probe_threads=stream_threads,
            )
            with _loads_lock:
                LOADS[self.kind] += 1
            self.load_seconds = time.perf_counter() - t0
            cuda = encoder.device == "cuda"
            self._encoder = encoder
            self._engine = BatchEngine(
                encoder,
                max_batch_tokens=self.spec.max_batch_tokens or default_batch_tokens(encoder.device),
                pin_memory=cuda,
                launch_ahead=cuda,
                tokenize_threads=self.spec.tokenize_threads
                or default_tokenize_threads(encoder.device),
                window=default_window(encoder.device),
                streams=streams if encoder.device == "cpu" else 1,
                stream_threads=stream_threads,
            )
            self._warm_up()
            return self

    def _streams(self) -> tuple[int, int]:
        """(forward streams, intra-op threads each): `CORPUSMILL_CPU_STREAMS` or one per
        torch thread (model/hardware.py); the threads shared out between the streams."""
        import torch

        threads = torch.get_num_threads()
        device = resolve_device(self.spec.device)
        if (
            self.spec.compile
        ):  # a compiled graph's kernels keep the thread count they were built with
            return 1, threads
        if self.spec.cpu_streams and device == "cpu":
            streams = min(self.spec.cpu_streams, threads) if threads > 1 else 1
            return streams, max(1, threads // streams)
        return default_cpu_streams(device, threads)

    def release(self) -> None:
        """Drop the weights (the end of a run), keeping the shapes its forward ran for the
        next run (`record_kernel_shapes`); the description and tokenizer stay. Micro-
        batchers still open finish what they hold and close first (outside the lock: their
        worker may be loading the weights)."""
        for batcher in list(self._batchers):
            batcher.close()
        with self._lock:
            if self._encoder is not None:
                self._encoder.record_kernel_shapes()
            self._encoder = None
            self._engine = None
            self._numpy, self._numpy_tried = None, False

    def _warm_up(self) -> None:
        """Two small batches of different shapes after load, so the first partition is not
        charged for lazy init. A compiled model specialises its first graph to the first
        shape it sees and compiles a shape-general one on the second, then never again;
        both compiles land here, in `warmup_seconds`."""
        assert self._engine is not None
        t0 = time.perf_counter()
        short, long = _WARM_SHORT, _WARM_LONG
        if self.kind == "cross-encoder":
            self._engine.encode([(short, short)] * 4)
            self._engine.encode([(short, short), (short, long)])
        else:
            self._engine.encode([short] * 4)
            self._engine.encode([short, long])
        self.warmup_seconds = time.perf_counter() - t0

    def _loaded_engine(self) -> BatchEngine:
        self.load()
        assert self._engine is not None
        return self._engine

    # -- domain methods --------------------------------------------------------------------
    def encode(self, items: list) -> tuple[np.ndarray, EngineStats]:
        """Rows for texts (embedder) or (query, passage) pairs (cross-encoder), in input
        order, with the engine's statistics; a row the engine failed is NaN."""
        return self._loaded_engine().encode(items)

    def embed(self, texts: list) -> np.ndarray:
        """One float32 vector per text (or `TokenIds`), in input order, through the engine
        (which runs a few texts, a query or a micro-batch of queries, in the calling
        thread)."""
        rows, _stats = self._loaded_engine().encode(texts)
        return rows

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """`embed` for a few query texts. While the weights are not resident (a cold
        `corpusmill search`), up to `NUMPY_QUERY_TOKENS` tokens go through the float32 NumPy
        forward of the same files (model/numpy_forward.py), which spares the process
        `import torch`, where it reads the model and `CORPUSMILL_FORWARD` forces no path;
        otherwise, and in a process that holds the weights (the service), the engine."""
        if not self.loaded:
            forward = self._numpy_forward()
            if forward is not None:
                items = self.tokens.tokenize(texts)
                if sum(len(item["input_ids"]) for item in items) <= NUMPY_QUERY_TOKENS:
                    return forward.embed(items)
        return self.embed(texts)

    def _numpy_forward(self) -> NumpyBertEmbedder | None:
        with self._lock:
            if not self._numpy_tried:
                self._numpy_tried = True
                desc = self.description
                if (
                    self.kind == "embedder"
                    and self.spec.forward == "auto"
                    and not unsupported(desc.config, self.kind)
                ):
                    try:
                        self._numpy = NumpyBertEmbedder.from_description(desc)
                    except Exception:  # noqa: BLE001 (e.g. bf16 tensors: the engine embeds)
                        self._numpy = None
            return self._numpy

    def micro_batcher(
        self,
        *,
        max_wait_s: float = DEFAULT_WAIT_S,
        max_batch: int = DEFAULT_MAX_BATCH,
        on_batch: Callable[[int], None] | None = None,
    ) -> MicroBatcher:
        """A queue in front of `embed` for texts that arrive one at a time from many callers
        (the query service's requests): those waiting together share one `embed`, so one
        engine call and one forward (engine/microbatch.py). The caller closes it;
        `release` closes any still open. `on_batch(size)` hears of each forward."""
        batcher = MicroBatcher(
            self.embed, max_wait_s=max_wait_s, max_batch=max_batch, on_batch=on_batch
        )
        self._batchers.add(batcher)
        return batcher

    def embed_stream(
        self, items: Iterable[tuple[str, Any]], sink: Sink, progress: ProgressMeter | None = None
    ) -> EngineStats:
        """Stream (key, text or TokenIds) items through the engine; `sink(window, rows,
        failed)` gets each finished window, in order; `progress` (see engine/progress.py)
        hears how far it got at its rhythm. Nothing to embed: no weights load."""
        stream = iter(items)
        first = next(stream, None)
        if first is None:
            return EngineStats()
        return self._loaded_engine().run(
            itertools.chain([first], stream),
            sink=sink,
            text_of=lambda item: item[1],
            progress=progress,
        )

    def score(self, pairs: list[tuple[str, str]]) -> tuple[np.ndarray, EngineStats]:
        """One relevance logit per (query, passage) pair (cross-encoder), NaN if failed."""
        logits, stats = self._loaded_engine().encode(pairs)
        return (logits[:, 0] if logits.ndim == 2 else logits), stats

    def lineage(self) -> dict[str, Any]:
        """Metadata for every materialisation that used this model. Before the weights are
        loaded it says so (`weights_loaded: false`) instead of loading them to find out."""
        card = self.card
        meta: dict[str, Any] = {
            "model_id": card.model_id,
            "model_revision": card.revision,
            "weights_loaded": self.loaded,
        }
        if not self.loaded:
            device = resolve_device(self.spec.device)
            meta["device"] = device
            meta["dtype"] = dtype_label(self.spec.dtype, device)
            return meta
        enc, engine = self._encoder, self._engine
        assert engine is not None
        meta.update(
            {
                "device": enc.device,
                "dtype": enc.dtype_name,
                "compiled": enc.compiled,
                "linear_kernel": enc.linear_kernel,
                "forward_path": enc.forward_path,
                "forward_reason": enc.forward_reason,
                "forward_streams": engine.streams,
                "threads_per_stream": engine.stream_threads,
                "int8_linear_layers": enc.int8_layers,
                "max_batch_tokens": engine.max_batch_tokens,
                "tokenize_threads": engine.tokenize_threads,
                "launch_ahead": engine.launch_ahead,
                "model_load_seconds": round(self.load_seconds, 3),
                "warmup_seconds": round(self.warmup_seconds, 3),
            }
        )
        return meta
