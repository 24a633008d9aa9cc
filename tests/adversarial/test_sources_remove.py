"""Sources can be listed and removed, and a file is one document however it was reached
(issue 27, item 5). Real ingest runs with the tiny real bi-encoder (two generations: a
second model's built beside the live one), the `corpusmill` CLI in-process, and removal
stopped at each of its commits (the store's `on_commit`), and SIGKILLed in a child
process: a rerun leaves every table as one uninterrupted removal does."""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil

import pytest

from app.cli import main
from corpusmill.store import Store
from corpusmill.store.generations import read_registry
from corpusmill.store.schemas import PRIMARY_KEYS
from corpusmill.store.sources import remove_source
from tests.adversarial import source_faults
from tests.adversarial.conftest import cli_env
from tests.e2e.test_generation_faults import kill_after
from tests.runs import ingest, tiny_settings

TABLES = ("documents", "quarantine", "chunks", "embeddings")


def write(folder, files: dict[str, str]):
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def every_row(db: str) -> dict[str, list]:
    """Each physical table's rows (key and document), sorted: equal dicts, equal contents."""
    store = Store(db)
    suffixes = {g.suffix for g in read_registry(store).generations.values()} | {""}
    out = {}
    for suffix in sorted(suffixes):
        view = store.for_generation(suffix)
        for name in TABLES:
            if view.open(name) is not None and view.physical(name) not in out:
                key = PRIMARY_KEYS[name]
                rows = view.scan(name, list({key: 0, "doc_id": 0})).to_pylist()
                out[view.physical(name)] = sorted((r[key], r["doc_id"]) for r in rows)
    return out


def docs_of(db: str) -> list[str]:
    return sorted(Store(db).scan("documents", ["doc_id"])["doc_id"].to_pylist())


@pytest.fixture
def env(monkeypatch, tmp_path, tiny_embedder_path):
    cli_env(monkeypatch, tmp_path / "db", tiny_embedder_path)
    x = write(
        tmp_path / "x",
        {
            "good.txt": "a good note about walrus operators in python",
            "other.txt": "another note, on context managers and the with statement",
            "sub/deep.txt": "a deeper note on generators and lazy iteration",
            "odd#name.txt": "a note whose file name holds a hash sign, on decorators",
        },
    )
    return str(tmp_path / "db"), x


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_file_is_one_document_however_it_was_reached(env, capsys):
    db, x = env
    assert cli(capsys, "ingest", str(x / "good.txt"), "--json")[0] == 0
    (alone,) = docs_of(db)
    assert cli(capsys, "ingest", str(x), "--json")[0] == 0
    assert len(docs_of(db)) == 4 and alone in docs_of(db)
    # A file inside the folder, by its own path: the same document, and its siblings stay.
    before = every_row(db)
    for name in ("sub/deep.txt", "odd#name.txt"):
        assert cli(capsys, "ingest", str(x / name), "--json")[0] == 0
        assert every_row(db) == before, name
    code, out, err = cli(capsys, "search", "walrus operators", "--json", "--k", "10")
    hits = [h for h in json.loads(out) if "walrus" in h["text"]]
    assert len(hits) == 1, hits  # one document, not two with duplicate hits
    # Both at once: the folder reads the file.
    assert cli(capsys, "ingest", str(x), str(x / "good.txt"), "--json")[0] == 0
    assert every_row(db) == before


def test_sources_list_and_remove_a_folder_and_a_removed_file(
    env, capsys, other_tiny_embedder_path, monkeypatch, tmp_path
):
    db, x = env
    y = write(tmp_path / "y", {"kept.txt": "notes that stay in the store", "empty.txt": " "})
    assert cli(capsys, "ingest", str(x), str(y), "--json")[0] == 0
    # A second generation, built beside the live one by another model.
    monkeypatch.setenv("CORPUSMILL_MODEL", str(other_tiny_embedder_path))
    monkeypatch.setenv("CORPUSMILL_PROMOTE", "manual")
    assert cli(capsys, "ingest", str(x), str(y), "--json")[0] == 0
    assert len(read_registry(Store(db)).generations) == 2

    code, out, _ = cli(capsys, "sources", "list", "--json")
    listed = {s["source"]: s for s in json.loads(out)}
    assert code == 0 and set(listed) == {str(x), str(y)}
    assert (listed[str(x)]["documents"], listed[str(y)]["quarantined"]) == (4, 1)

    # The case: the file is gone from disk; removing it takes its rows out.
    (x / "good.txt").unlink()
    code, out, err = cli(capsys, "sources", "remove", str(x / "good.txt"), "--json")
    assert code == 0, err
    removal = json.loads(out)
    assert removal["documents"] == 1 and len(removal["rows"]) == 5  # 2 per generation + 1
    code, out, _ = cli(capsys, "search", "walrus operators", "--json", "--k", "10")
    assert not [h for h in json.loads(out) if "good.txt" in h["uri"]]

    # A whole source, plain output: every row of it leaves every table of both generations.
    code, out, err = cli(capsys, "sources", "remove", str(y))
    assert code == 0 and "removed source" in out, err
    rows = every_row(db)
    assert all(not doc.startswith(str(y)) for table in rows.values() for _k, doc in table)
    assert all(v for t, v in rows.items() if t != "quarantine")  # x's rows remain
    code, out, _ = cli(capsys, "sources", "list", "--json")
    assert [s["source"] for s in json.loads(out)] == [str(x)]
    # Nothing left by that name: an input error, naming the command that lists sources.
    code, _, err = cli(capsys, "sources", "remove", str(y))
    assert code == 3 and "sources list" in err


@pytest.fixture
def two_sources(tmp_path, tiny_embedder_path):
    """A store holding two folders, one with a quarantined file, and where removing the
    second is one commit per table."""
    x = write(tmp_path / "x", {f"{i}.txt": f"note {i} on lambda {i}" for i in range(4)})
    y = write(
        tmp_path / "y", {f"{i}.txt": f"page {i} on iterators" for i in range(4)} | {"e.txt": ""}
    )
    db = str(tmp_path / "base")
    assert ingest([x, y], tiny_settings(db, tiny_embedder_path))["success"]
    clean = str(tmp_path / "clean")
    shutil.copytree(db, clean)
    with Store(clean).write_lock():
        remove_source(Store(clean), [str(y)], str(y))
    return db, clean, str(y)


class Stop(Exception):
    pass


def test_removal_stopped_at_each_commit_then_rerun_is_exactly_once(two_sources, tmp_path):
    db, clean, y = two_sources
    want = every_row(clean)
    commits: list[str] = []
    remove_source(
        Store(str(shutil.copytree(db, tmp_path / "count")), on_commit=commits.append), [y], y
    )
    assert commits == ["embeddings", "chunks", "quarantine", "documents"]  # one per table
    for nth in range(1, len(commits) + 1):
        copy = str(shutil.copytree(db, tmp_path / f"stop-{nth}"))
        seen: list[str] = []

        def stop(table: str, seen=seen, nth=nth) -> None:
            seen.append(table)
            if len(seen) == nth:
                raise Stop

        with pytest.raises(Stop):
            remove_source(Store(copy, on_commit=stop), [y], y)
        assert every_row(copy) != want or nth == len(commits)
        remove_source(Store(copy), [y], y)
        assert every_row(copy) == want, f"stopped after commit {nth}"


def test_removal_sigkilled_between_commits_then_rerun_is_exactly_once(two_sources, tmp_path):
    db, clean, y = two_sources
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(["tests.adversarial.source_faults"])
    kill_after(context, source_faults.remove, (db, y, y), 2)
    assert every_row(db) != every_row(clean)  # half-done: documents still hold y
    assert [s for s in docs_of(db) if s.startswith(y)]
    remove_source(Store(db), [y], y)
    assert every_row(db) == every_row(clean)
