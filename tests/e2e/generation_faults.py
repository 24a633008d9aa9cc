"""What the SIGKILL tests of the model lifecycle run in a child process: a build, a
promotion or a rollback whose store reports each commit to the parent and then waits for
it, so the parent kills the child right after a chosen commit (nothing of the child runs
after that commit, as in a crash at that instant). Here, not in the test module, so a
forkserver child imports only what it needs."""

from __future__ import annotations


def _reporting(conn):
    def on_commit(table: str) -> None:
        conn.send(table)
        conn.recv()  # the parent answers "go" or kills this process

    return on_commit


def build(conn, corpus: str, db: str, model: str, doc_group: int) -> None:
    """Ingest `corpus` into `db` with `model` (manual promotion), committing every
    `doc_group` documents (in `embeddings` too: one commit per group, not a window's
    groups merged)."""
    import corpusmill.sync.chunks
    import corpusmill.sync.embeddings
    from tests.runs import ingest, tiny_settings

    corpusmill.sync.chunks.DOC_GROUP = corpusmill.sync.embeddings.DOC_GROUP = doc_group
    corpusmill.sync.embeddings.COMMIT_DOCS = doc_group
    settings = tiny_settings(db, model, promote="manual")
    ingest([corpus], settings, on_commit=_reporting(conn))
    conn.send("done")


def switch(conn, db: str, model: str, action: str, gen_id: str) -> None:
    """`promote` `gen_id` (with `model` configured) or `rollback`."""
    from corpusmill.lifecycle.operations import promote, rollback
    from corpusmill.model import Model
    from corpusmill.model.pool import ModelPool
    from corpusmill.store import Store
    from tests.runs import tiny_settings

    store = Store(db, on_commit=_reporting(conn))
    if action == "promote":
        pool = ModelPool(Model(tiny_settings(db, model).embedder_spec()))
        outcome = promote(store, gen_id, pool)
    else:
        outcome = rollback(store)
    conn.send(f"done:{outcome.done}")
