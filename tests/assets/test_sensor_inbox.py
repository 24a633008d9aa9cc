"""The inbox sensor through Dagster's public testing API: `build_sensor_context` on an
ephemeral instance, each run request executed with `dagster.materialize` on that same
instance (what the daemon would launch), the tiny embedder and a temporary LanceDB."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import dagster as dg
import pytest

from assets.partitions import RANGE_END, RANGE_START
from corpusmill.ids import doc_id_for, partition_of
from corpusmill.store import Store
from tests.runs import tiny_settings
from tests.waiting import lock_waiters, wait_for

SENSOR = "test_inbox_sensor"
CHUNKS = {"chunk_tokens": 24, "chunk_overlap": 4}  # the tiny model reads 64 tokens at most


@pytest.fixture
def env(tmp_path, db_uri, tiny_embedder_path):
    return make_env(tmp_path, db_uri, tiny_embedder_path)


def make_env(tmp_path, db_uri, model_path) -> Env:
    """An inbox folder under `tmp_path`, its sensor, an ephemeral instance, the resources."""
    from resources import build_resources
    from sensors.inbox import build_inbox_sensor

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    settings = tiny_settings(
        db_uri, model_path, inbox=str(inbox), sensor_interval=1, max_file_bytes=4096
    )
    sensor = build_inbox_sensor(settings, name=SENSOR)
    return Env(
        inbox=inbox,
        db=db_uri,
        sensor=sensor,
        instance=dg.DagsterInstance.ephemeral(),
        resources=build_resources(settings),
    )


class Env:
    def __init__(self, inbox: Path, db: str, sensor, instance, resources) -> None:
        self.inbox, self.db, self.sensor, self.instance, self.resources = (
            inbox,
            db,
            sensor,
            instance,
            resources,
        )
        self.cursor: str | None = None

    def tick(self):
        """Evaluate the sensor once; returns (run request or None, skip message or None)."""
        ctx = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            sensor_name=SENSOR,
            resources={"store": self.resources["store"]},
        )
        result = self.sensor(ctx)
        if isinstance(result, dg.SkipReason):
            return None, result.skip_message
        if result.cursor is not None:
            self.cursor = result.cursor
        if result.run_requests:
            assert len(result.run_requests) == 1, "one run per tick"
            return result.run_requests[0], None
        return None, result.skip_reason.skip_message

    def execute(self, request, resources=None, raise_on_error=True):
        """Launch the request as the daemon would: same job assets, tags and config."""
        from assets.corpus import chunked_documents, raw_corpus
        from assets.embeddings import embeddings

        return dg.materialize(
            [raw_corpus, chunked_documents, embeddings],
            instance=self.instance,
            tags=request.tags,
            run_config=with_tiny_chunks(request.run_config),
            resources=resources or self.resources,
            raise_on_error=raise_on_error,
        )

    def ingest_until_quiet(self, max_runs: int = 3) -> list:
        requests = []
        for _ in range(max_runs):
            request, _skip = self.tick()
            if request is None:
                return requests
            assert self.execute(request).success
            requests.append(request)
        raise AssertionError(f"sensor still requests runs after {max_runs} runs")

    def stored_docs(self) -> dict[str, str]:
        rows = (
            Store(self.db)
            .scan("documents", ["doc_id", "content_hash"], "source = 'inbox'")
            .to_pylist()
        )
        return {r["doc_id"]: r["content_hash"] for r in rows}

    def embedded_docs(self) -> dict[str, int]:
        rows = (
            Store(self.db).scan("embeddings", ["doc_id"], "source = 'inbox'")["doc_id"].to_pylist()
        )
        return {d: rows.count(d) for d in set(rows)}


def with_tiny_chunks(run_config: dict) -> dict:
    ops = {**run_config["ops"], "chunked_documents": {"config": CHUNKS}}
    return {**run_config, "ops": ops}


def _doc(rel: str) -> str:
    return doc_id_for("inbox", rel)


def test_empty_inbox_requests_nothing(env):
    request, skip = env.tick()
    assert request is None and "in sync" in skip


def test_new_files_one_run_over_touched_shards_then_quiet(env):
    names = ["a.txt", "b.md", "sub/c.txt", "d.html"]
    for n in names:
        (env.inbox / n).parent.mkdir(parents=True, exist_ok=True)
        (env.inbox / n).write_text(f"<p>document {n} about sensors and shards</p>")
    request, _ = env.tick()
    again, _ = env.tick()
    assert request is not None and again.run_key == request.run_key, "same changes, same run key"
    parts = sorted(partition_of(_doc(n)) for n in names)
    assert request.tags[RANGE_START] == parts[0] and request.tags[RANGE_END] == parts[-1]
    assert set(request.tags["corpusmill/partitions"].split(",")) == set(parts)
    assert json.loads(request.tags["corpusmill/changes"]) == {"new": 4}
    assert request.run_config["ops"]["raw_corpus"]["config"]["sources"] == [
        f"inbox={env.inbox.resolve()}"
    ]

    assert env.execute(request).success
    assert set(env.stored_docs()) == {_doc(n) for n in names}
    assert set(env.embedded_docs()) == {_doc(n) for n in names}
    request, skip = env.tick()
    assert request is None and "in sync" in skip
    assert json.loads(env.cursor)["requests"] == 1


def test_change_back_and_forth_ingests_each_time_and_delete_removes(env):
    f = env.inbox / "flip.txt"
    (env.inbox / "keep.txt").write_text("a file that stays as it is")
    f.write_text("version A of the flipping file")
    env.ingest_until_quiet()
    keys = []
    for text in [
        "version B of the flipping file",
        "version A of the flipping file",
        "version B of the flipping file",
    ]:
        f.write_text(text)
        request, _ = env.tick()
        assert request is not None and json.loads(request.tags["corpusmill/changes"]) == {
            "changed": 1
        }
        assert request.run_key not in keys, "a file changed back and forth is ingested each time"
        keys.append(request.run_key)
        assert env.execute(request).success
        stored = Store(env.db).scan("embeddings", ["text"], "source = 'inbox'")["text"].to_pylist()
        assert any(text.lower() in t.lower() for t in stored)
        assert env.tick()[0] is None
    f.unlink()
    request, _ = env.tick()
    assert json.loads(request.tags["corpusmill/changes"]) == {"deleted": 1}
    assert env.execute(request).success
    assert set(env.embedded_docs()) == {_doc("keep.txt")}
    assert set(env.stored_docs()) == {_doc("keep.txt")}
    assert env.tick()[0] is None


def test_half_done_run_is_asked_for_again(env):
    """A run killed after `documents` committed but before `embeddings` did: the store
    shows the work as pending and the sensor requests it again."""
    from assets.corpus import chunked_documents, raw_corpus

    (env.inbox / "x.txt").write_text("the embeddings of this file never got written")
    request, _ = env.tick()
    partial = dg.materialize(
        [raw_corpus, chunked_documents],
        instance=env.instance,
        tags=request.tags,
        run_config=with_tiny_chunks(request.run_config),
        resources=env.resources,
    )
    assert partial.success and set(env.stored_docs()) == {_doc("x.txt")}
    retry, _ = env.tick()
    assert retry is not None and json.loads(retry.tags["corpusmill/changes"]) == {"pending": 1}
    assert env.execute(retry).success
    assert env.embedded_docs() == {_doc("x.txt"): 1}
    assert env.tick()[0] is None


def test_failed_run_is_retried_under_a_new_key(env, tmp_path):
    from resources import build_resources

    (env.inbox / "y.txt").write_text("this file's first run fails")
    request, _ = env.tick()
    broken = build_resources(tiny_settings(env.db, tmp_path / "no-model"))
    assert not env.execute(request, resources=broken, raise_on_error=False).success
    retry, _ = env.tick()
    assert retry.tags["corpusmill/change"] == request.tags["corpusmill/change"]
    assert retry.run_key != request.run_key and retry.run_key.endswith("-1")
    assert env.execute(retry).success
    assert env.tick()[0] is None


def test_waits_while_an_inbox_run_is_in_flight(env):
    """A run blocked on the store's write lock is STARTED in the instance: the sensor does
    not request a second run for the same files, even after another file arrives."""
    (env.inbox / "slow.txt").write_text("a file whose run waits for the store lock")
    request, _ = env.tick()
    holder = Store(env.db)
    results = []
    with holder.write_lock():
        worker = threading.Thread(target=lambda: results.append(env.execute(request)))
        worker.start()
        # The run is in flight and blocked on the lock the test holds (the kernel lists its
        # thread as waiting on the store's lock file), not merely started.
        wait_for(lambda: lock_waiters(env.db), 60, "the inbox run to wait for the store lock")
        assert env.instance.get_run_records(
            filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])
        )
        (env.inbox / "late.txt").write_text("a file that arrives while the run waits")
        second, skip = env.tick()
        assert second is None and "in flight" in skip
    worker.join(120)
    assert results and results[0].success
    # The run read the folder when it got the lock: the late file may or may not be in it;
    # either way the next ticks converge with no file left behind.
    env.ingest_until_quiet()
    assert set(env.embedded_docs()) == {_doc("slow.txt"), _doc("late.txt")}


def test_bad_input_recorded_in_metadata_and_table_then_quiet(env, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("a file outside the inbox")
    (env.inbox / "good.txt").write_text("the one good file")
    (env.inbox / "bin.txt").write_bytes(b"\x00\x01binary")
    (env.inbox / "latin.txt").write_bytes(b"caf\xe9")
    (env.inbox / "blank.md").write_text("  \n")
    (env.inbox / "big.txt").write_text("x" * 5000)  # over this sensor's 4096-byte limit
    (env.inbox / "link.txt").symlink_to(outside)
    request, _ = env.tick()
    assert json.loads(request.tags["corpusmill/changes"]) == {"new": 1, "quarantined": 5}
    result = env.execute(request)
    assert result.success
    # One materialisation per shard of the run, all with the run's (run_-labelled) metadata.
    raw = next(
        e.event_specific_data.materialization
        for e in result.get_asset_materialization_events()
        if e.event_specific_data.materialization.asset_key.to_user_string() == "raw_corpus"
    )
    assert raw.metadata["run_quarantined"].value == 5
    sample = raw.metadata["quarantine_sample"].value
    for name in ("bin.txt", "latin.txt", "blank.md", "big.txt", "link.txt"):
        assert name in sample
    rows = Store(env.db).scan("quarantine", ["uri", "reason"], "source = 'inbox'").to_pylist()
    assert {Path(r["uri"]).name for r in rows} == {
        "bin.txt",
        "latin.txt",
        "blank.md",
        "big.txt",
        "link.txt",
    }
    assert set(env.embedded_docs()) == {_doc("good.txt")}
    assert env.tick()[0] is None, "quarantined files must not trigger a run every tick"
    # Fixing a file takes it out of quarantine and into the table.
    (env.inbox / "latin.txt").write_text("café, now in UTF-8")
    request, _ = env.tick()
    assert json.loads(request.tags["corpusmill/changes"]) == {"cleared": 1, "new": 1}
    assert env.execute(request).success
    assert _doc("latin.txt") in env.embedded_docs()
    assert env.tick()[0] is None
