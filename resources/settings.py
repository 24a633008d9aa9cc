"""The deployment's pipeline settings as a resource: what a run uses unless its config
says otherwise (sources, chunking, the rerank query set, the eval data).

Asset config fields left empty fall back to these, so a value set once in the
environment (read by definitions.py) applies to the launchpad, the sensor and the CLI
alike, while a run can still override it.
"""

import dagster as dg

from corpusmill.config import Settings


class PipelineSettingsResource(dg.ConfigurableResource):
    sources: list[str] = list(Settings.sources)
    max_file_bytes: int = Settings.max_file_bytes
    chunk_tokens: int = Settings.chunk_tokens
    chunk_overlap: int = Settings.chunk_overlap
    rerank_queries: str = Settings.queries  # JSONL of {"id", "text"}; empty: the built-in set
    rerank_k: int = Settings.rerank_k
    eval_data: str = Settings.eval_data
    executor: str = Settings.executor  # local | ray (CORPUSMILL_EXECUTOR)
    ray_workers: int = Settings.ray_workers
    ray_address: str = Settings.ray_address

    @classmethod
    def from_settings(cls, settings: Settings) -> "PipelineSettingsResource":
        """Every field from the Settings attribute of its name (`rerank_queries` reads
        `queries`), so a pipeline setting added to both is mapped without code here."""
        values = {
            name: getattr(settings, _SETTING_NAMES.get(name, name)) for name in cls.model_fields
        }
        values["sources"] = list(values["sources"])
        return cls(**values)


# Resource fields whose Settings attribute has another name.
_SETTING_NAMES = {"rerank_queries": "queries"}
