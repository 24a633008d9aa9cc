"""What a run told Dagster, per shard: read back from the instance's event log."""

from __future__ import annotations

import dagster as dg

KINDS = {
    "observation": (dg.DagsterEventType.ASSET_OBSERVATION, "asset_observation"),
    "materialization": (dg.DagsterEventType.ASSET_MATERIALIZATION, "materialization"),
}


def per_shard(instance, run_id: str, asset: str, kind: str = "observation") -> dict:
    """partition -> the metadata of `asset`'s event of `kind` for that shard in this run."""
    event_type, attribute = KINDS[kind]
    out = {}
    for record in instance.all_logs(run_id, of_type=event_type):
        event = getattr(record.dagster_event.event_specific_data, attribute)
        if event.asset_key == dg.AssetKey(asset):
            out[event.partition] = {k: getattr(v, "value", v) for k, v in event.metadata.items()}
    return out
