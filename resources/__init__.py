"""Dagster resources, built in one place from one `Settings`: the store, the two models,
the pool of the generations' models,
and the settings themselves (which the assets read whole, with their run's overrides)."""

from collections.abc import Callable
from typing import Any

from corpusmill.config import Settings
from resources.models import model_pool_resource, model_resource
from resources.store import store_resource


def build_resources(
    settings: Settings, *, on_commit: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Every resource the graph uses. `on_commit(table_name)` is handed to the run's
    `Store` (tests stop a run at a commit boundary with it)."""
    return {
        "store": store_resource(settings, on_commit=on_commit),
        "embedder": model_resource(settings.embedder_spec()),
        "models": model_pool_resource(),
        "reranker": model_resource(settings.reranker_spec()),
        "settings": settings,
    }


__all__ = ["build_resources", "model_pool_resource", "model_resource", "store_resource"]
