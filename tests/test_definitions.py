"""definitions.py loads and describes the graph the README promises."""

import dagster as dg

from assets.partitions import shards
from corpusmill.ids import ALL_PARTITIONS


def test_graph_assets_dependencies_partitions_resources():
    from definitions import defs

    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"raw_corpus", "chunked_documents", "embeddings"} <= keys
    parents = lambda name: {p.to_user_string() for p in graph.get(dg.AssetKey(name)).parent_keys}  # noqa: E731
    assert parents("chunked_documents") == {"raw_corpus"}
    assert parents("embeddings") == {"chunked_documents"}
    for name in ("raw_corpus", "chunked_documents", "embeddings"):
        node = graph.get(dg.AssetKey(name))
        assert node.partitions_def == shards
        assert node.backfill_policy == dg.BackfillPolicy.single_run()
    assert shards.get_partition_keys() == ALL_PARTITIONS
    assert {"store", "embedder", "reranker"} <= set(defs.resources)
    assert defs.resolve_job_def("ingest") is not None


def test_loading_definitions_does_not_import_torch():
    """The UI reloads definitions often: heavy imports must stay lazy."""
    import subprocess
    import sys

    code = "import sys, definitions; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
