"""What the UI shows about each asset besides its data: owners, column schemas, and code
versions that follow the configured model and chunker (see corpusmill/versions.py).

Applied in one place to the asset definitions, by `build_definitions`, which the UI and
`corpusmill ingest` both load, so a CLI run records the code versions the UI compares
against.
"""

from collections.abc import Sequence
from typing import Any

import dagster as dg
import pyarrow as pa

from corpusmill.chunking import chunker_version
from corpusmill.config import Settings
from corpusmill.model import Model, ModelSpec
from corpusmill.store import chunk_fields, chunks_schema, documents_schema, rerank_schema
from corpusmill.versions import code_versions

OWNERS = ["team:corpusmill"]


def _embeddings_columns() -> pa.Schema:
    # The vector's length is the model's dimension; the table's schema metadata holds it.
    fields = chunk_fields() + [
        pa.field("vector", pa.list_(pa.float32())),
        pa.field("model_id", pa.string()),
    ]
    return pa.schema(fields)


def table_schema(schema: pa.Schema) -> dg.TableSchema:
    """A LanceDB table's Arrow schema as the UI's column schema."""
    return dg.TableSchema(columns=[dg.TableColumn(name=f.name, type=str(f.type)) for f in schema])


COLUMN_SCHEMAS = {
    "raw_corpus": documents_schema,
    "chunked_documents": chunks_schema,
    "embeddings": _embeddings_columns,
    "rerank_scores": rerank_schema,
}


def _card(spec: ModelSpec) -> Any:
    """The model's card from its folder's files (no weights), or None if none is
    configured or its folder is unreadable: the definitions must load even when a model
    path is wrong; the run will say why."""
    try:
        return Model(spec).card if spec.configured else None
    except Exception:
        return None


def with_specs(assets: Sequence[dg.AssetsDefinition], settings: Settings) -> list:
    """`assets` with owners, column schemas and code versions from `settings` (the
    embedder's card, the reranker's, and the chunk settings)."""
    versions = code_versions(
        _card(settings.embedder_spec()),
        chunker_version(settings.chunk_tokens, settings.chunk_overlap),
        _card(settings.reranker_spec()),
    )

    def spec(s: dg.AssetSpec) -> dg.AssetSpec:
        name = s.key.to_user_string()
        metadata = dict(s.metadata or {})
        if name in COLUMN_SCHEMAS:
            metadata["dagster/column_schema"] = table_schema(COLUMN_SCHEMAS[name]())
        return s.replace_attributes(
            owners=OWNERS,
            code_version=versions.get(name, s.code_version),
            metadata=metadata,
        )

    return list(dg.map_asset_specs(spec, assets))
