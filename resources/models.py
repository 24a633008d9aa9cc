"""Model resources: a `corpusmill.model.Model` held for one run, released when it ends.

The embedder and the cross-encoder are the same resource over another `ModelSpec`: the
run's `Model`, created when the run sets its resources up (once per run: the definitions
use the in-process executor), loading its weights on first use and keeping them resident
for every shard of the run, and released when the run ends. Nothing unloads it on a timer.
Assets take it as `dg.ResourceParam[Model]` and call its domain methods.
"""

from collections.abc import Iterator

import dagster as dg

from corpusmill.model import Model, ModelSpec
from corpusmill.model.pool import ModelPool


def model_resource(spec: ModelSpec) -> dg.ResourceDefinition:
    """The run's model for `spec` (a cross-encoder spec with an empty path: none
    configured, which `Model.configured` says)."""

    what = spec.path or ("the packaged default" if spec.configured else "none configured")

    @dg.resource(description=f"the run's {spec.kind} ({what}), loaded once, released at the end")
    def run_model(_context: dg.InitResourceContext) -> Iterator[Model]:
        model = Model(spec)
        if model.configured:
            # Read the model folder's files now (milliseconds, no weights): a bad path
            # fails the run before any asset writes, not halfway through it.
            model.description  # noqa: B018
        try:
            yield model
        finally:
            model.release()

    return run_model


def model_pool_resource() -> dg.ResourceDefinition:
    """The run's models of the store's generations (`ModelPool`), around the run's
    embedder: a run that keeps the live generation in sync beside the configured one
    loads the live one's model from its recorded path, once, and releases it at the end."""

    @dg.resource(
        required_resource_keys={"embedder"},
        description="the models of the generations a run keeps in sync (the embedder's "
        "own generation and the live one), each loaded once, released at the end",
    )
    def run_models(context: dg.InitResourceContext) -> Iterator[ModelPool]:
        pool = ModelPool(context.resources.embedder)
        try:
            yield pool
        finally:
            pool.release()

    return run_models
