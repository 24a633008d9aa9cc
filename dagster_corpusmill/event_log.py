"""Dagster's SQLite event log, with its connections kept open instead of opened per event.

Dagster's `SqliteEventLogStorage` builds a SQLAlchemy engine and opens a connection for
every transaction (`NullPool`), and closing the last connection to a WAL database makes
SQLite checkpoint it. Each asset event is two such transactions (the run's database and
the cross-run index), ~20 ms on the 2-core machines' disk (~10 ms on tmpfs). A 1,000-
document ingest over the 16 shards stores ~130 events while it runs (a materialisation
and an observation per shard and asset, the steps' own), about 2 s of a 30 s run
(docs/BENCHMARKS.md). Here each database keeps one engine whose pool keeps its connection
open between transactions: ~3 ms an event. Durability is SQLite's as before (WAL, the
same `synchronous` setting); only the reconnecting is gone.

What keeps that safe:
- a forked child never uses its parent's connections (engines are per process id);
- at most `OPEN_DATABASES` databases are held open (a webserver reads many runs'
  databases), the least recently used closed first;
- `wipe()` closes every connection before Dagster deletes the files.

dagster.yaml names it with no config; the databases are where Dagster's default puts them,
`$DAGSTER_HOME/history/runs/` (or `base_dir`, as for Dagster's class). A class named in
dagster.yaml is not told the home it was read from, so without `base_dir` DAGSTER_HOME
must name it (as `dagster dev`, the webserver and the daemon require anyway); an instance
opened elsewhere is refused (`register_instance`).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dagster import Field, StringSource
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.sql import create_engine
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS

from corpusmill.config import dagster_home

OPEN_DATABASES = 8  # the index and the runs being written or read at once


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """`SqliteEventLogStorage` whose per-database engines outlive a transaction."""

    def __init__(self, base_dir: str, inst_data: Any = None, from_dagster_home: bool = False):
        self._engines: OrderedDict[str, Any] = OrderedDict()
        self._engines_pid = os.getpid()
        self._from_dagster_home = from_dagster_home
        super().__init__(base_dir, inst_data=inst_data)

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: Any, config_value: dict[str, Any]
    ) -> PooledSqliteEventLogStorage:
        base_dir = config_value.get("base_dir")
        if not base_dir:
            home = dagster_home()
            if not home:
                raise ValueError(
                    "PooledSqliteEventLogStorage needs DAGSTER_HOME set, or base_dir in its "
                    "dagster.yaml config"
                )
            base_dir = os.path.join(home, "history", "runs")  # Dagster's default place
            return cls(base_dir, inst_data=inst_data, from_dagster_home=True)
        return cls(base_dir, inst_data=inst_data)

    def register_instance(self, instance: Any) -> None:
        """An instance opened from another home than DAGSTER_HOME names
        (`DagsterInstance.from_config(path)`) would keep its events under DAGSTER_HOME:
        refused, never silently split."""
        super().register_instance(instance)
        home_runs = os.path.join(os.path.abspath(instance.root_directory), "history", "runs")
        if self._from_dagster_home and home_runs != self._base_dir:
            raise ValueError(
                f"this instance's home is {instance.root_directory}, but DAGSTER_HOME puts "
                f"its event log in {self._base_dir}: set DAGSTER_HOME to the home, or "
                "base_dir in dagster.yaml's event_log_storage config"
            )

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Any]:
        # As Dagster's `_connect`, under the same lock, but the engine is kept.
        with self._db_lock:
            engine = self._engine(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def _own_engines(self) -> OrderedDict[str, Any]:
        """This process's engines. A forked child starts with none: it forgets its
        parent's without closing them (closing would act on the parent's file handles)."""
        if self._engines_pid != os.getpid():
            self._engines = OrderedDict()
            self._engines_pid = os.getpid()
        return self._engines

    def _engine(self, shard: str) -> Any:
        engines = self._own_engines()
        engine = engines.get(shard)
        if engine is not None:
            engines.move_to_end(shard)
            return engine
        engine = create_engine(
            self.conn_string_for_shard(shard),
            pool_size=1,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
        )
        if shard not in self._initialized_dbs:
            self._initdb(engine)
            self._initialized_dbs.add(shard)
        engines[shard] = engine
        while len(engines) > OPEN_DATABASES:
            _, oldest = engines.popitem(last=False)
            oldest.dispose()
        return engine

    def open_databases(self) -> list[str]:
        """The databases this process holds a connection pool for, oldest first."""
        return list(self._own_engines())

    def _close_all(self) -> None:
        with self._db_lock:
            engines = list(self._own_engines().values())
            self._engines = OrderedDict()
        for engine in engines:
            engine.dispose()

    def wipe(self) -> None:
        self._close_all()
        super().wipe()

    def dispose(self) -> None:
        self._close_all()
        super().dispose()
