"""What the UI shows about the assets: code versions that follow the model and the chunker,
owners, column schemas, descriptions, the embeddings checks, a described schedule."""

import dagster as dg

from assets.corpus import chunked_documents, raw_corpus
from assets.embeddings import embeddings
from assets.specs import with_specs
from corpusmill.config import Settings
from resources import EmbedderResource, PipelineSettingsResource, build_resources


def _versions(resources) -> dict[str, str]:
    assets = with_specs([raw_corpus, chunked_documents, embeddings], resources)
    return {k.to_user_string(): v for a in assets for k, v in a.code_versions_by_key.items()}


def test_code_versions_change_with_the_chunker_and_with_the_model(tiny_embedder_path):
    base = build_resources(Settings())
    before = _versions(base)
    rechunked = _versions({**base, "settings": PipelineSettingsResource(chunk_tokens=100)})
    assert rechunked["raw_corpus"] == before["raw_corpus"]
    assert rechunked["chunked_documents"] != before["chunked_documents"]
    assert rechunked["embeddings"] != before["embeddings"]
    other_model = _versions(
        {**base, "embedder": EmbedderResource(model_path=str(tiny_embedder_path))}
    )
    assert other_model["embeddings"] != before["embeddings"]
    assert other_model["chunked_documents"] != before["chunked_documents"]  # its tokenizer
    assert "53aa51172d14" in before["embeddings"]  # the packaged weights' revision


def test_every_asset_has_owners_and_a_description_and_tables_a_column_schema():
    from definitions import defs

    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.owners == ["team:corpusmill"], key
        assert node.description, key
    for name in ("raw_corpus", "chunked_documents", "embeddings", "rerank_scores"):
        schema = graph.get(dg.AssetKey(name)).metadata["dagster/column_schema"]
        names = [c.name for c in schema.columns]
        assert "chunk_id" in names or "doc_id" in names
    emb = graph.get(dg.AssetKey("embeddings")).metadata["dagster/column_schema"]
    assert {"vector", "model_id", "partition"} <= {c.name for c in emb.columns}

    checks = {k.name for k in graph.asset_check_keys if k.asset_key == dg.AssetKey("embeddings")}
    assert checks == {"vectors_valid", "one_embedding_per_chunk", "model_card_matches"}
    for key in graph.asset_check_keys:
        spec = graph.get_check_spec(key)
        assert spec.blocking and spec.description
    assert "SciFact" in graph.get(dg.AssetKey("retrieval_quality")).description
    [schedule] = defs.schedules
    assert schedule.description
