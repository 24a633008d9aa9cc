"""The inbox sensor on an `s3://` prefix (moto's server on 127.0.0.1), evaluated through
Dagster's testing API and each request executed as a real `dagster.materialize` run, as in
tests/assets/test_sensor_inbox.py: new, changed and deleted objects flow in; an unchanged
bucket costs one listing and no GET, even for a sensor that has just started; the run
fetches only the objects that changed; hostile objects are quarantined with their reasons
(issue 24, item 4). moto's request recorder counts what reached the server."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from corpusmill.ids import doc_id_for
from corpusmill.store import Store
from tests.assets.test_sensor_inbox import Env
from tests.runs import tiny_settings
from tools.sample_documents import docx, pdf

SENSOR = "test_inbox_sensor"


def _requests(seen) -> tuple[int, int]:
    """(listing requests, object GETs) among the requests the server recorded."""
    gets = [path for method, path in seen() if method == "GET"]
    lists = sum(1 for path in gets if "list-type=2" in path)
    return lists, len(gets) - lists


class S3Env(Env):
    """`Env` over an inbox prefix of the local S3 server, the store on local disk."""

    def __init__(self, s3, prefix: str, db: str, settings) -> None:
        from resources import build_resources
        from sensors.inbox import build_inbox_sensor

        super().__init__(
            inbox=Path("/nonexistent"),  # the folder-only helpers are not used here
            db=db,
            sensor=build_inbox_sensor(settings, name=SENSOR),
            instance=dg.DagsterInstance.ephemeral(),
            resources=build_resources(settings),
        )
        self.s3, self.prefix, self.settings = s3, prefix, settings
        self.client = s3.client()

    def put(self, key: str, data: bytes | str) -> None:
        body = data.encode() if isinstance(data, str) else data
        self.client.put_object(Bucket=self.s3.bucket, Key=f"{self.prefix}/{key}", Body=body)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.s3.bucket, Key=f"{self.prefix}/{key}")

    def restart_sensor(self) -> None:
        """A new sensor, as a restarted code server builds it: its cache is empty."""
        from sensors.inbox import build_inbox_sensor

        self.sensor = build_inbox_sensor(self.settings, name=SENSOR)

    def rows(self, table: str) -> list[dict]:
        return Store(self.db).scan(table, ["doc_id"], "source = 'inbox'").to_pylist()


@pytest.fixture
def env(local_s3, tmp_path, db_uri, tiny_embedder_path):
    prefix = f"inbox-{tmp_path.name}"
    settings = tiny_settings(
        db_uri,
        tiny_embedder_path,
        local_s3.storage_options,
        inbox=local_s3.uri(prefix),
        sensor_interval=1,
        max_file_bytes=1 << 20,
    )
    return S3Env(local_s3, prefix, db_uri, settings)


def _doc(key: str) -> str:
    return doc_id_for("inbox", key)


def _changes(request) -> dict[str, int]:
    return json.loads(request.tags["corpusmill/changes"])


def test_objects_flow_in_change_and_leave_and_unchanged_ones_cost_one_listing(env, local_s3):
    env.put("a.txt", "the first object about rivers and their deltas")
    env.put("sub/b.md", "# B\n\nthe second object about mountains")
    env.put("c.html", "<h1>C</h1><p>the third object about violins</p>")
    env.put("paper.pdf", pdf(["a page about comets", "a page about harbours"]))
    request, _ = env.tick()
    assert request is not None and _changes(request) == {"new": 4}
    assert request.run_config["ops"]["raw_corpus"]["config"]["sources"] == [
        f"inbox={local_s3.uri(env.prefix)}"
    ]
    assert env.execute(request).success
    everything = {_doc(k) for k in ("a.txt", "sub/b.md", "c.html", "paper.pdf")}
    assert set(env.stored_docs()) == everything and set(env.embedded_docs()) == everything

    with local_s3.recording() as seen:
        request, skip = env.tick()
        assert request is None and "in sync" in skip
        assert _requests(seen) == (1, 0), "a warm sensor: one listing, no GET"
    env.restart_sensor()
    with local_s3.recording() as seen:
        request, skip = env.tick()
        assert request is None and "in sync" in skip
        assert _requests(seen) == (1, 0), "a cold sensor too: the store holds the signatures"

    env.put("sub/b.md", "# B\n\nthe second object, now about glaciers")
    env.put("a.txt", "the first object about rivers and their deltas")  # same bytes again
    with local_s3.recording() as seen:
        request, _ = env.tick()
        assert _requests(seen) == (1, 1), "only the changed object is read"
    assert _changes(request) == {"changed": 1}
    result = env.execute(request)
    assert result.success
    embedded = next(
        e.event_specific_data.materialization.metadata["run_chunks_embedded"].value
        for e in result.get_asset_materialization_events()
        if e.event_specific_data.materialization.asset_key.to_user_string() == "embeddings"
    )
    assert 0 < embedded <= env.embedded_docs()[_doc("sub/b.md")], "only b's chunks embed"

    env.delete("c.html")
    request, _ = env.tick()
    assert _changes(request) == {"deleted": 1}
    assert env.execute(request).success
    for table in ("documents", "chunks", "embeddings"):
        assert {r["doc_id"] for r in env.rows(table)} == everything - {_doc("c.html")}, table
    assert env.tick()[0] is None


def test_hostile_objects_are_quarantined_with_their_reasons_and_nothing_else_is_lost(env):
    good = pdf(["A good page about lighthouses."])
    env.put("good.pdf", good)
    env.put("good.docx", docx([("heading1", "Good"), ("p", "A good paragraph.")]))
    env.put("truncated.pdf", good[: len(good) // 2])
    env.put("locked.pdf", pdf(["secret"], user_password="pw"))
    env.put("scan.pdf", pdf(["", ""], image_only=True))
    env.put("fake.docx", b"PK\x03\x04 not really a zip")
    env.put("big.txt", "x" * (2 << 20))  # over this sensor's 1 MiB limit
    request, _ = env.tick()
    assert _changes(request) == {"new": 2, "quarantined": 5}
    assert env.execute(request).success
    rows = Store(env.db).scan("quarantine", ["uri", "reason"], "source = 'inbox'").to_pylist()
    reasons = {Path(r["uri"]).name: r["reason"] for r in rows}
    assert set(reasons) == {"truncated.pdf", "locked.pdf", "scan.pdf", "fake.docx", "big.txt"}
    assert "unreadable PDF" in reasons["truncated.pdf"]
    assert "password" in reasons["locked.pdf"]
    assert reasons["scan.pdf"].startswith("no text layer")
    assert "zip" in reasons["fake.docx"]
    assert reasons["big.txt"].startswith("object is 2097152 bytes, over the limit")
    assert set(env.embedded_docs()) == {_doc("good.pdf"), _doc("good.docx")}
    assert env.tick()[0] is None, "quarantined objects do not trigger a run every tick"


def test_a_run_over_every_shard_fetches_only_what_changed(
    local_s3, tmp_path, db_uri, tiny_embedder_path
):
    """`corpusmill ingest s3://...` again: an object whose ETag and size are the ones its
    row carries is not fetched; a changed one is; a re-upload of the same bytes is not."""
    from tests.runs import ingest

    prefix = f"run-{tmp_path.name}"
    client = local_s3.client()
    for i in range(6):
        client.put_object(
            Bucket=local_s3.bucket, Key=f"{prefix}/f{i}.txt", Body=f"object {i} text".encode()
        )
    client.put_object(
        Bucket=local_s3.bucket, Key=f"{prefix}/r.jsonl", Body=b'{"_id": "1", "text": "a record"}'
    )
    settings = tiny_settings(db_uri, tiny_embedder_path, local_s3.storage_options)
    uri = local_s3.uri(prefix)
    assert ingest([uri], settings)["documents_new"] == 7
    client.put_object(Bucket=local_s3.bucket, Key=f"{prefix}/f1.txt", Body=b"object 1 changed")
    client.put_object(Bucket=local_s3.bucket, Key=f"{prefix}/f2.txt", Body=b"object 2 text")
    with local_s3.recording() as seen:
        again = ingest([uri], settings)
        _lists, gets = _requests(seen)
    assert again["success"] and again["documents_changed"] == 1 and again["chunks_embedded"] >= 1
    assert gets == 2, "f1.txt (changed) and r.jsonl (a records file is always read)"
