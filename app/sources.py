"""`corpusmill sources list|remove`: what the store holds, by source, and taking one out.

    corpusmill sources list                  # label, documents, chunks (live), quarantined
    corpusmill sources remove ~/papers       # a source as listed, or as it was ingested
    corpusmill sources remove ~/papers/a.pdf # one file, whatever folder it came through

Both take `--json`. The rows are found and deleted by `corpusmill.store.sources`; a source
still in CORPUSMILL_SOURCES or the inbox comes back on the next run.
"""

from __future__ import annotations

import argparse
import json
import os

from corpusmill.config import Settings
from corpusmill.errors import InputError


def _store(settings: Settings):
    from corpusmill.store import Store

    return Store(settings.db, settings.storage_options)


def cmd_list(args, settings: Settings) -> int:
    from corpusmill.store.sources import list_sources

    rows = [s.as_dict() for s in list_sources(_store(settings))]
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("no sources: the store is empty (`corpusmill ingest PATH`)")
    for r in rows:
        print(
            f"{r['documents']:>8} docs {r['chunks']:>8} chunks {r['quarantined']:>6} quar.  {r['source']}"
        )
    return 0


def cmd_remove(args, settings: Settings) -> int:
    from corpusmill.sources import source_label
    from corpusmill.store.generations import read_registry
    from corpusmill.store.sources import remove_source

    store = _store(settings)
    name = args.source
    names = [name] if "://" in name or name == "pydoc" else [name, source_label(name)]
    path = name if "://" in name else os.path.abspath(os.path.expanduser(name))
    scopes = [g.suffix for g in read_registry(store).generations.values() if g.suffix]
    with store.write_lock(scopes=scopes):  # whole store: no ingest writes meanwhile
        removal = remove_source(store, names, path)
    if not removal.rows:
        raise InputError(
            f"{name!r} is neither a source nor a file of one in {settings.db!r}; "
            "`corpusmill sources list` shows them"
        )
    if args.json:
        print(json.dumps(removal.as_dict()))
        return 0
    what = f"source {removal.sources[0]}" if removal.sources else f"file {path}"
    print(f"removed {what}: {removal.documents} documents")
    for table, n in removal.rows.items():
        print(f"{table:>28}: {n} rows")
    return 0


def add_parser(sub) -> list[argparse.ArgumentParser]:
    """The `sources` command under `sub`; its subcommands' parsers."""
    from app.generations import add_group

    source = ("source", "a source as `sources list` shows it, its path, or a file")
    return add_group(
        sub,
        "sources",
        "the sources in the store: list, remove",
        "A source is what rows carry as their label: pydoc, a folder's or "
        "file's absolute path, an s3:// prefix, a LABEL=. `remove` deletes every row of "
        "its documents from every table of every generation, one commit per table.",
        [
            ("list", cmd_list, "every source: documents, chunks, quarantined", None),
            ("remove", cmd_remove, "remove a source (or one file of one) from every table", source),
        ],
    )
