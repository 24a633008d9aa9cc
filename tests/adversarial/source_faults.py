"""What the SIGKILL test of `sources remove` runs in a child process: a removal whose store
reports each commit to the parent and waits, so the parent kills it right after a chosen
commit. Here, not in the test module, so a forkserver child imports only what it needs."""

from __future__ import annotations


def remove(conn, db: str, name: str, path: str) -> None:
    from corpusmill.store import Store
    from corpusmill.store.sources import remove_source

    def on_commit(table: str) -> None:
        conn.send(table)
        conn.recv()  # the parent answers "go" or kills this process

    store = Store(db, on_commit=on_commit)
    with store.write_lock():
        remove_source(store, [name], path)
    conn.send("done")
