"""A real `dagster-daemon` over a temporary DAGSTER_HOME, inbox and LanceDB directory.

Each daemon starts in a session of its own, so the test can find the processes it started
(the daemon, its code server, the warm launcher's fork server and the run workers it
forks) by session id, kill one of them with SIGKILL, and clean up all of them at the end.
Nothing is killed by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import yaml

from tests.e2e.procs import BIN, REPO
from tests.waiting import wait_for as _wait_for

FORK_SERVER = "multiprocessing.forkserver import main"
CHUNKS = {"CORPUSMILL_CHUNK_TOKENS": "24", "CORPUSMILL_CHUNK_OVERLAP": "4"}


def wait_for(predicate, timeout: float, what: str, every: float = 0.5):
    """`tests.waiting.wait_for`, polling a daemon's slower pace by default."""
    return _wait_for(predicate, timeout, what, every)


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


class InboxDaemon:
    def __init__(self, root: Path, model_path: Path, interval: int = 5) -> None:
        self.root = root
        self.home = root / "dagster_home"
        self.inbox = root / "inbox"
        self.db = str(root / "lancedb")
        self.model_path = model_path
        self.home.mkdir(parents=True)
        self.inbox.mkdir()
        config = yaml.safe_load((REPO / "dagster.yaml").read_text())
        # The repo's instance config, with monitoring fast enough for a test: a run whose
        # launch was cut short by a killed daemon is failed in seconds, not minutes.
        config["run_monitoring"].update(start_timeout_seconds=20, poll_interval_seconds=2)
        # The test process opens this instance too, and its DAGSTER_HOME is the repo's
        # (Makefile): the event log's place is given, not read from the environment.
        config["event_log_storage"]["config"] = {"base_dir": str(self.home / "history" / "runs")}
        (self.home / "dagster.yaml").write_text(yaml.safe_dump(config))
        self.env = {
            **os.environ,
            "DAGSTER_HOME": str(self.home),
            "CORPUSMILL_DB": self.db,
            "CORPUSMILL_INBOX": str(self.inbox),
            "CORPUSMILL_MODEL": str(model_path),
            "CORPUSMILL_DTYPE": "float32",
            "CORPUSMILL_SENSOR_INTERVAL": str(interval),
            "TOKENIZERS_PARALLELISM": "false",
            **CHUNKS,
        }
        self.proc: subprocess.Popen | None = None
        self.sessions: list[int] = []
        self.starts = 0

    # -- processes -----------------------------------------------------------------------
    def start(self) -> None:
        log = open(self.root / f"daemon-{self.starts}.log", "wb")  # noqa: SIM115 (lives with the process)
        self.proc = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.sessions.append(self.proc.pid)
        self.starts += 1

    def kill_daemon(self) -> None:
        """SIGKILL the daemon process only: its code server and a running run live on, as
        they do when the daemon crashes."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def run_workers(self) -> list[int]:
        """Run processes: children of the warm launcher's fork server (dagster.yaml), which
        a fork leaves with the server's own command line."""
        workers = []
        for sid in self.sessions:
            for pid in _session_pids(sid):
                if FORK_SERVER in _cmdline(pid) and FORK_SERVER in _cmdline(_ppid(pid)):
                    workers.append(pid)
        return workers

    def kill_run(self) -> int | None:
        workers = self.run_workers()
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        return workers[0] if workers else None

    def close(self) -> None:
        for sid in self.sessions:
            for pid in _session_pids(sid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def __enter__(self) -> InboxDaemon:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def log_tail(self, n: int = 4000) -> str:
        logs = sorted(self.root.glob("daemon-*.log"))
        return "".join(p.read_text(errors="replace")[-n:] for p in logs[-2:])

    # -- the instance and the store --------------------------------------------------------
    def instance(self):
        import dagster as dg

        return dg.DagsterInstance.from_config(str(self.home))

    def runs(self, statuses=None) -> list:
        import dagster as dg

        with self.instance() as instance:
            return list(instance.get_run_records(filters=dg.RunsFilter(statuses=statuses or [])))

    def write(self, rel: str, text: str) -> Path:
        """Write atomically (temp name, then rename), as a careful producer does."""
        path = self.inbox / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        return path


def expected_chunks(inbox: Path, model_path: Path) -> Counter:
    """Chunk ids that every file now in the inbox should have in the table, computed here
    with the same reader and the tiny model's tokenizer, independently of the store."""
    from transformers import AutoTokenizer

    from corpusmill.chunking import TokenChunker
    from corpusmill.sources import Document, read_source

    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    chunker = TokenChunker(
        tokenizer,
        int(CHUNKS["CORPUSMILL_CHUNK_TOKENS"]),
        int(CHUNKS["CORPUSMILL_CHUNK_OVERLAP"]),
        64,
    )
    docs = [d for d in read_source(str(inbox), label="inbox") if isinstance(d, Document)]
    result = chunker.chunk_documents([(d.doc_id, d.body) for d in docs])
    return Counter(c.chunk_id for c in result.chunks)


def stored_chunks(db: str, table: str = "embeddings") -> Counter:
    from corpusmill.store import Store

    rows = Store(db).scan(table, ["chunk_id"], "source = 'inbox'")
    return Counter(rows["chunk_id"].to_pylist())


def documents_writer(
    inbox: str,
    db: str,
    locked: bool,
    barrier,
    before_write,
    rendezvous_seconds: float,
    keys: bool = True,
) -> None:
    """One of several processes that sync the same inbox into `documents` at the same
    moment (here, not in the test module, so a spawned child imports nothing heavy).

    `before_write` is a barrier every writer meets just before its first write, once it
    has read the table: without the lock all of them get there, so the interleaving the
    lock forbids (everyone reads, then everyone writes) happens every time instead of by
    chance. With the lock the holder waits alone, the wait times out and breaks the
    barrier, and the others pass it when their turn comes. `keys=False` leaves a table
    without a declared primary key as it is (the store would otherwise declare it)."""
    import contextlib
    import threading

    from corpusmill.ids import ALL_PARTITIONS
    from corpusmill.sources import ReadOptions
    from corpusmill.store import Store
    from corpusmill.sync import sync_documents

    if not keys:
        Store._declare_key = staticmethod(lambda name, table: None)
    store = Store(db)
    write = store.replace_rows
    met = threading.Event()

    def replace_rows_after_rendezvous(*args, **kwargs):
        if not met.is_set():
            met.set()
            with contextlib.suppress(threading.BrokenBarrierError):
                before_write.wait(rendezvous_seconds)
        return write(*args, **kwargs)

    store.replace_rows = replace_rows_after_rendezvous
    barrier.wait(120)
    with store.write_lock() if locked else contextlib.nullcontext():
        sync_documents(
            store, ALL_PARTITIONS, [(inbox, "inbox")], ReadOptions(max_file_bytes=1 << 20)
        )
