"""`sync_documents` writes documents as they stream from the source, a group per commit,
instead of reading the whole source first: a run over a bucket of a million objects holds
one group's texts, not the corpus's."""

from __future__ import annotations

from corpusmill.ids import ALL_PARTITIONS
from corpusmill.sources import ReadOptions
from corpusmill.store import Store
from corpusmill.sync import documents as documents_module
from corpusmill.sync import sync_documents


def test_documents_are_committed_while_the_source_is_still_being_read(
    tmp_path, db_uri, monkeypatch
):
    folder = tmp_path / "src"
    (folder / "aa").mkdir(parents=True)
    (folder / "zz").mkdir()
    for i in range(5):
        (folder / "aa" / f"f{i}.txt").write_text(f"document {i}")
    monkeypatch.setattr(documents_module, "WRITE_GROUP", 2)
    commits: list[str] = []

    def on_commit(table: str) -> None:
        # At the first commit, a file appears in a folder the listing has not reached
        # yet: a source read whole before writing would never see it.
        if table == "documents" and not commits:
            (folder / "zz" / "late.txt").write_text("written during the first commit")
        commits.append(table)

    report = sync_documents(
        Store(db_uri, on_commit=on_commit),
        ALL_PARTITIONS,
        [(str(folder), "src")],
        ReadOptions(),
    )
    assert report.new == 6 and report.documents == 6
    assert commits.count("documents") == 3, "groups of two: 2, 2, 2"
    uris = Store(db_uri).scan("documents", ["uri"])["uri"].to_pylist()
    assert any(u.endswith("zz/late.txt") for u in uris)
