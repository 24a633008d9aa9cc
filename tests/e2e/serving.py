"""Serving a store in a test: rows as the embeddings asset writes them, a store of them,
`corpusmill serve`'s app under uvicorn in a thread on 127.0.0.1, and `corpusmill serve` as a
process (stopped by its PID)."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx

from corpusmill.ids import partition_of
from corpusmill.search import Searcher
from corpusmill.store import Store, rows_to_table
from tests.e2e.procs import BIN, free_port


def chunk_rows(embedder, table, docs: dict[str, list[str]]):
    """Rows as the embeddings asset writes them: one per chunk, ids from doc and position."""
    items = [(d, p, t) for d, texts in docs.items() for p, t in enumerate(texts)]
    vectors = embedder.embed([t for _, _, t in items])
    rows = [
        {
            "chunk_id": f"{d}@{p}",
            "doc_id": d,
            "doc_key": d,
            "source": d.split("#")[0],
            "uri": d,
            "partition": partition_of(d),
            "position": p,
            "text": t,
            "content_hash": f"h-{d}-{p}",
            "doc_hash": f"d-{d}",
            "n_tokens": 12,
            "chunker": "t",
            # Where the chunk sits (issue 24): the `notes` documents as if read from PDFs.
            "page_first": p + 2 if d.startswith("notes") else None,
            "page_last": p + 3 if d.startswith("notes") else None,
            "section": ["Notes", d.split("#")[1]] if d.startswith("notes") else None,
            "vector": v.tolist(),
            "model_id": embedder.card.model_id,
        }
        for (d, p, t), v in zip(items, vectors, strict=True)
    ]
    return rows_to_table([{k: r.get(k) for k in table.schema.names} for r in rows], table.schema)


def make_store(path, embedder, docs: dict[str, str], storage_options=None) -> Store:
    """A store at `path` (a directory or s3://) holding one chunk per document of `docs`,
    embedded by `embedder`, with its full-text index."""
    store = Store(str(path), storage_options)
    table = store.ensure_embeddings(embedder.card)
    table.add(chunk_rows(embedder, table, {d: [t] for d, t in docs.items()}))
    Searcher(store, embedder=embedder).ensure_fts_index()
    return store


class Service:
    """uvicorn serving `app` in a thread on 127.0.0.1, on a socket bound before it starts."""

    def __init__(self, app) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})

    def __enter__(self) -> Service:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


class ServeProcess:
    """`corpusmill serve` as a child process on a free loopback port, settings from `env`
    (as a user runs it); up when /health answers; stopped by its PID."""

    def __init__(self, env: dict[str, str], *flags: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [str(BIN / "corpusmill"), "serve", "--port", str(self.port), *flags],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def __enter__(self) -> ServeProcess:
        deadline = time.monotonic() + 120
        while True:
            assert self.proc.poll() is None, self.proc.stderr.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "serve did not come up"
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def serve_env(db: str, model_path, **settings: str) -> dict[str, str]:
    """The environment `corpusmill serve` reads: this store, this model in float32."""
    return {
        **os.environ,
        "CORPUSMILL_DB": db,
        "CORPUSMILL_MODEL": str(model_path),
        "CORPUSMILL_DTYPE": "float32",
        "CORPUSMILL_API_TOKEN": "",
        **settings,
    }
