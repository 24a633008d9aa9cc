"""The instance's event log (dagster.yaml: dagster_corpusmill/event_log.py): Dagster's SQLite
event log whose connections stay open, per process, a bounded number of databases."""

import logging
import os
import sqlite3
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.events.log import EventLogEntry

from dagster_corpusmill.event_log import OPEN_DATABASES, PooledSqliteEventLogStorage

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    (tmp_path / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    return tmp_path


def _observe(instance, partition: str) -> None:
    instance.report_runless_asset_event(
        dg.AssetObservation(asset_key="docs", partition=partition, metadata={"rows": 1})
    )


def _log(storage, run_id: str) -> None:
    storage.store_event(
        EventLogEntry(
            error_info=None,
            level=logging.INFO,
            user_message="hello",
            run_id=run_id,
            timestamp=time.time(),
        )
    )


def test_the_instance_uses_it_where_dagster_keeps_its_event_log(home):
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        _observe(instance, "shard-00")
    assert (home / "history" / "runs" / "index.db").is_file()


def test_events_are_stored_over_connections_kept_open(home, monkeypatch):
    connects = []
    real_connect = sqlite3.connect

    def counting_connect(*args, **kwargs):
        connects.append(args[0] if args else kwargs.get("database"))
        return real_connect(*args, **kwargs)

    with dg.DagsterInstance.get() as instance:
        _observe(instance, "shard-00")  # creates and initialises the databases
        monkeypatch.setattr(sqlite3, "connect", counting_connect)
        for i in range(20):
            _observe(instance, f"shard-{i % 16:02d}")
        monkeypatch.setattr(sqlite3, "connect", real_connect)
    # Dagster's own class opens two connections an event (the run's and the index's)
    assert len(connects) == 0
    with dg.DagsterInstance.get() as fresh:  # committed: another process reads them
        assert len(fresh.fetch_observations(dg.AssetKey("docs"), limit=100).records) == 21


def test_a_forked_child_opens_its_own_connections(home):
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        _observe(instance, "shard-00")
        assert storage.open_databases()
        pid = os.fork()
        if pid == 0:  # the child: must not touch the parent's connections
            ok = storage.open_databases() == []
            try:
                _observe(instance, "shard-01")
            except Exception:  # noqa: BLE001
                ok = False
            os._exit(0 if ok and storage.open_databases() else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        _observe(instance, "shard-02")  # the parent's connections still work
        records = instance.fetch_observations(dg.AssetKey("docs"), limit=10).records
    assert sorted(r.partition_key for r in records) == ["shard-00", "shard-01", "shard-02"]


def test_at_most_open_databases_are_held_and_every_run_reads_back(home):
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        runs = [f"run-{i}" for i in range(OPEN_DATABASES + 4)]
        for run_id in runs:
            _log(storage, run_id)
            assert len(storage.open_databases()) <= OPEN_DATABASES
        assert storage.open_databases()[-1] == runs[-1]
        for run_id in runs:  # an evicted database opens again
            records = storage.get_records_for_run(run_id).records
            assert [r.event_log_entry.user_message for r in records] == ["hello"]


def test_wipe_closes_every_connection_before_the_files_go(home):
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        _log(storage, "run-a")
        assert "run-a" in storage.open_databases()
        storage.wipe()
        assert "run-a" not in storage.open_databases()
        _log(storage, "run-a")  # into a new file, not the deleted one
    with dg.DagsterInstance.get() as fresh:
        assert len(fresh.event_log_storage.get_records_for_run("run-a").records) == 1


def test_without_dagster_home_or_base_dir_it_says_what_it_needs(monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    with pytest.raises(ValueError, match="DAGSTER_HOME"):
        PooledSqliteEventLogStorage.from_config_value(None, {})


def test_an_instance_opened_from_another_home_than_dagster_home_is_refused(home, tmp_path_factory):
    other = tmp_path_factory.mktemp("other_home")
    (other / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    with pytest.raises(ValueError, match="DAGSTER_HOME"):
        dg.DagsterInstance.from_config(str(other))


def test_with_base_dir_any_home_works(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    config["event_log_storage"]["config"] = {"base_dir": str(tmp_path / "events")}
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        _observe(instance, "shard-00")
    assert (tmp_path / "events" / "index.db").is_file()


def test_closing_the_instance_closes_the_databases_and_their_write_ahead_logs(home):
    runs_dir = home / "history" / "runs"
    with dg.DagsterInstance.get() as instance:
        _observe(instance, "shard-00")
        _log(instance.event_log_storage, "run-a")
        assert list(runs_dir.glob("*.db-wal"))  # open connections keep their WAL
    assert list(runs_dir.glob("*.db-wal")) == []  # the last close checkpointed it
