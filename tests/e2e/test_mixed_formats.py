"""Issue 24's "Done when", end to end: a folder mixing PDF, Word, HTML, Markdown and text
(with hostile files), ingested by the `corpusmill` command and by a real Dagster run the
inbox sensor requests, answers questions with the packaged MiniLM: one answered on page 3
of the PDF returns a hit on page 3, one answered in one section of the Word file returns a
hit naming that section, every document is found by a question about it, and each hostile
file is quarantined with its reason. The same folder copied to `s3://` on the local S3
server ingests to the same documents and chunks (tiny model: no semantics needed there);
changing one object re-embeds only its chunks, deleting one removes it from every table.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg
import pytest

from corpusmill.ids import parse_doc_id
from corpusmill.store import Store
from tests.assets.corpora import (
    ANSWER_PAGE,
    ANSWER_SECTION,
    HOSTILE_REASONS,
    QUESTIONS,
    write_mixed_folder,
)
from tests.e2e.procs import run_cli, with_checkout
from tests.runs import ingest, tiny_settings

# MiniLM reads 256 tokens; small chunks, so a page of the PDF is two or three chunks and the
# answer sits in chunks of its own page.
CHUNKS = {"chunk_tokens": 64, "chunk_overlap": 8}
GOOD = {"field-manual.pdf", "handbook.docx", "violins.html", "notes/volcanoes.md", "tides.txt"}


def _key(doc_id: str) -> str:
    return parse_doc_id(doc_id)[1]


def _check_answers(search) -> None:
    """`search(question)` -> the top hit as a dict (the --json form)."""
    hit = search(QUESTIONS["page"])
    assert hit["uri"].endswith("field-manual.pdf"), hit
    assert hit["page_first"] <= ANSWER_PAGE <= hit["page_last"], hit
    hit = search(QUESTIONS["section"])
    assert hit["uri"].endswith("handbook.docx") and hit["section"] == ANSWER_SECTION, hit
    assert hit["page_first"] is None
    for key in ("violins.html", "notes/volcanoes.md", "tides.txt"):
        hit = search(QUESTIONS[key])
        assert _key(hit["doc_id"]) == key, (key, hit)
        assert hit["page_first"] is None


def _check_quarantine(db: str) -> None:
    rows = Store(db).scan("quarantine", ["uri", "reason"]).to_pylist()
    reasons = {Path(r["uri"]).name: r["reason"] for r in rows}
    assert set(reasons) == set(HOSTILE_REASONS)
    for name, phrase in HOSTILE_REASONS.items():
        assert phrase in reasons[name], (name, reasons[name])


@pytest.mark.slow
def test_the_cli_ingests_a_mixed_folder_and_answers_with_pages_and_sections(tmp_path):
    folder = tmp_path / "mixed"
    write_mixed_folder(folder)
    home = tmp_path / "dagster_home"
    home.mkdir()
    db = str(tmp_path / "db")
    env = with_checkout(
        {
            **os.environ,
            "CORPUSMILL_DB": db,
            "CORPUSMILL_CHUNK_TOKENS": str(CHUNKS["chunk_tokens"]),
            "CORPUSMILL_CHUNK_OVERLAP": str(CHUNKS["chunk_overlap"]),
            "DAGSTER_HOME": str(home),
        }
    )
    env.pop("CORPUSMILL_MODEL", None)  # the packaged MiniLM
    summary = json.loads(run_cli(env, "ingest", str(folder), "--json").splitlines()[-1])
    assert summary["success"] and summary["documents"] == 5
    assert summary["quarantined"] == len(HOSTILE_REASONS)
    _check_quarantine(db)

    def search(question: str) -> dict:
        (hit,) = json.loads(run_cli(env, "search", question, "--k", "1", "--json"))
        return hit

    _check_answers(search)
    # The plain output cites the page.
    plain = run_cli(env, "search", QUESTIONS["page"], "--k", "1")
    hit = search(QUESTIONS["page"])
    first, last = hit["page_first"], hit["page_last"]
    cited = f"p. {first}" if first == last else f"pp. {first}-{last}"
    assert f"({cited}, § Bees)" in plain, plain  # the outline entry of page 3


@pytest.mark.slow
def test_a_sensor_run_ingests_a_mixed_inbox_and_answers_with_pages_and_sections(
    tmp_path, minilm_path
):
    from assets.corpus import chunked_documents, raw_corpus
    from assets.embeddings import embeddings
    from corpusmill.model import Model, ModelSpec
    from corpusmill.search import Searcher
    from resources import build_resources
    from sensors.inbox import build_inbox_sensor

    inbox = tmp_path / "inbox"
    write_mixed_folder(inbox)
    db = str(tmp_path / "db")
    settings = tiny_settings(db, minilm_path, inbox=str(inbox), **CHUNKS)
    resources = build_resources(settings)
    instance = dg.DagsterInstance.ephemeral()
    sensor = build_inbox_sensor(settings, name="mixed_inbox")

    def tick():
        context = dg.build_sensor_context(
            instance=instance, sensor_name="mixed_inbox", resources={"store": resources["store"]}
        )
        return sensor(context)

    (request,) = tick().run_requests
    assert json.loads(request.tags["corpusmill/changes"]) == {
        "new": 5,
        "quarantined": len(HOSTILE_REASONS),
    }
    result = dg.materialize(
        [raw_corpus, chunked_documents, embeddings],
        instance=instance,
        tags=request.tags,
        run_config=request.run_config,
        resources=resources,
    )
    assert result.success
    assert not tick().run_requests, "in sync after one run"
    _check_quarantine(db)
    searcher = Searcher(db, embedder=Model(ModelSpec(path=str(minilm_path), dtype="float32")))

    def search(question: str) -> dict:
        (hit,) = searcher.search(question, k=1)
        return hit.as_dict()

    _check_answers(search)


@pytest.mark.slow
def test_the_same_folder_on_s3_ingests_to_the_same_documents_and_chunks(
    local_s3, tmp_path, tiny_embedder_path
):
    folder = tmp_path / "mixed"
    files = write_mixed_folder(folder)
    prefix = f"mixed-{tmp_path.name}"
    client = local_s3.client()
    for key, data in files.items():
        client.put_object(Bucket=local_s3.bucket, Key=f"{prefix}/{key}", Body=data)
    uri = local_s3.uri(prefix)
    options = local_s3.storage_options
    local_db, s3_db = str(tmp_path / "local-db"), str(tmp_path / "s3-db")
    assert ingest([folder], tiny_settings(local_db, tiny_embedder_path, options))["success"]
    s3_settings = tiny_settings(s3_db, tiny_embedder_path, options)
    first = ingest([uri], s3_settings, with_rerank=True)
    assert first["success"] and first["documents"] == 5
    _check_quarantine(s3_db)

    def documents(db: str) -> dict:
        rows = Store(db).scan(
            "documents", ["doc_id", "title", "text", "author", "structure", "content_hash"]
        )
        return {_key(r.pop("doc_id")): r for r in rows.to_pylist()}

    def chunks(db: str) -> dict:
        columns = ["doc_id", "position", "text", "content_hash", "page_first", "page_last"]
        rows = Store(db).scan("chunks", [*columns, "section"]).to_pylist()
        return {(_key(r.pop("doc_id")), r.pop("position")): r for r in rows}

    assert set(documents(s3_db)) == GOOD
    assert documents(s3_db) == documents(local_db)
    assert chunks(s3_db) == chunks(local_db)
    ids = Store(s3_db).scan("documents", ["doc_id", "uri"]).to_pylist()
    assert all(r["doc_id"].startswith(f"{uri}#") and r["uri"].startswith(f"{uri}/") for r in ids)

    # Change one object: only its chunks are embedded again.
    client.put_object(
        Bucket=local_s3.bucket, Key=f"{prefix}/tides.txt", Body=b"Neap tides come at half moon."
    )
    changed = ingest([uri], s3_settings, with_rerank=True)
    tides = [c for (key, _p), c in chunks(s3_db).items() if key == "tides.txt"]
    assert changed["documents_changed"] == 1 and changed["chunks_embedded"] == len(tides)
    assert changed["chunks_reused"] == changed["chunks"] - len(tides)

    # Delete one: its rows leave every table.
    client.delete_object(Bucket=local_s3.bucket, Key=f"{prefix}/handbook.docx")
    assert ingest([uri], s3_settings, with_rerank=True)["documents_deleted"] == 1
    store = Store(s3_db)
    for table in ("documents", "chunks", "embeddings", "rerank_scores"):
        keys = {_key(d) for d in store.scan(table, ["doc_id"])["doc_id"].to_pylist()}
        assert keys and "handbook.docx" not in keys, table
