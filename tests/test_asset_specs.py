"""What the UI shows about the assets: code versions that follow the model and the chunker,
owners, column schemas, descriptions, the embeddings checks, a described schedule."""

import dagster as dg

from assets.corpus import chunked_documents, raw_corpus
from assets.embeddings import embeddings
from assets.specs import with_specs
from corpusmill.config import Settings


def _versions(settings: Settings) -> dict[str, str]:
    assets = with_specs([raw_corpus, chunked_documents, embeddings], settings)
    return {k.to_user_string(): v for a in assets for k, v in a.code_versions_by_key.items()}


def test_code_versions_change_with_the_chunker_and_with_the_model(tiny_embedder_path):
    base = Settings()
    before = _versions(base)
    rechunked = _versions(base.with_overrides({"chunk_tokens": 100}))
    assert rechunked["raw_corpus"] == before["raw_corpus"]
    assert rechunked["chunked_documents"] != before["chunked_documents"]
    assert rechunked["embeddings"] != before["embeddings"]
    other_model = _versions(base.with_overrides({"model": str(tiny_embedder_path)}))
    assert other_model["embeddings"] != before["embeddings"]
    assert other_model["chunked_documents"] != before["chunked_documents"]  # its tokenizer
    assert "53aa51172d14" in before["embeddings"]  # the packaged weights' revision


def test_every_asset_has_owners_and_a_description_and_tables_a_column_schema():
    from definitions import defs

    loaded = defs()
    graph = loaded.resolve_asset_graph()
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
    [schedule] = loaded.schedules
    assert schedule.description


def test_every_unset_asset_config_field_overrides_the_setting_of_its_name():
    """An asset config field left unset (None) takes the deployment's value through
    `Settings.with_overrides`, which matches by name: a field named otherwise would be
    dropped silently."""
    import dataclasses

    from assets.corpus import ChunkConfig, CorpusConfig
    from assets.evaluation import EvaluationConfig
    from assets.rerank import RerankConfig

    settings = {f.name for f in dataclasses.fields(Settings)}
    for config in (CorpusConfig, ChunkConfig, RerankConfig, EvaluationConfig):
        overrides = {n for n, f in config.model_fields.items() if f.default is None}
        assert overrides and overrides <= settings, config.__name__


def test_the_model_resources_hold_the_settings_spec_for_one_run(tiny_embedder_path):
    """The run's model is `Model(settings.embedder_spec())`, set up with the run and
    released (its weights dropped) when the run ends."""
    from resources import build_resources

    settings = Settings(model=str(tiny_embedder_path), reranker="", dtype="float32")
    built = build_resources(settings)
    with dg.build_resources({k: built[k] for k in ("embedder", "reranker")}) as run:
        embedder, reranker = run.embedder, run.reranker
        assert embedder.spec == settings.embedder_spec()
        assert reranker.spec == settings.reranker_spec() and not reranker.configured
        embedder.embed(["one text"])
        assert embedder.loaded
    assert not embedder.loaded
