"""Runs queue per shard, not per store: the tags a run carries and the limits that read them."""

from pathlib import Path

import dagster as dg

from assets.partitions import SHARD_TAG, STORE_POOL, partition_range_tags
from corpusmill.ids import ALL_PARTITIONS

ROOT = Path(__file__).resolve().parents[2]


def test_a_run_names_every_shard_of_its_range():
    tags = partition_range_tags(["shard-05", "shard-02"])
    shard_tags = sorted(k for k in tags if k.startswith(SHARD_TAG))
    assert shard_tags == [f"{SHARD_TAG}shard-0{i}" for i in (2, 3, 4, 5)]


def test_the_instance_limits_each_shard_to_one_run(tmp_path, monkeypatch):
    (tmp_path / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with dg.DagsterInstance.get() as instance:
        config = instance.get_concurrency_config()
    limits = {d["key"]: d["limit"] for d in config.run_queue_config.tag_concurrency_limits}
    assert limits == {f"{SHARD_TAG}{p}": 1 for p in ALL_PARTITIONS}


def test_only_whole_store_assets_are_in_the_store_pool():
    from definitions import defs

    pooled = {
        node.key.to_user_string()
        for node in defs().resolve_asset_graph().asset_nodes
        if node.pools and STORE_POOL in node.pools
    }
    assert pooled == {"store_upkeep", "retrieval_quality"}
