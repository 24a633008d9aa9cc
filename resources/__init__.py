"""Dagster resources: thin holders of the store URI, the models and the pipeline settings."""

from corpusmill.config import Settings
from resources.models import CrossEncoderResource, EmbedderResource
from resources.settings import PipelineSettingsResource
from resources.store import LanceStoreResource


def build_resources(settings: Settings) -> dict:
    """Every resource the graph uses, from one `Settings` (the one place they are built)."""
    return {
        "store": LanceStoreResource(uri=settings.db, storage_options=settings.storage_options),
        "embedder": EmbedderResource.from_spec(settings.embedder_spec()),
        "reranker": CrossEncoderResource.from_spec(settings.reranker_spec()),
        "settings": PipelineSettingsResource.from_settings(settings),
    }


__all__ = [
    "CrossEncoderResource",
    "EmbedderResource",
    "LanceStoreResource",
    "PipelineSettingsResource",
    "build_resources",
]
