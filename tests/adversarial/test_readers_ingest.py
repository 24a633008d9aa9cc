"""A real ingest of a folder mixing PDF, Word, HTML, Markdown and text with hostile files:
the run completes, every good document is stored and embedded, each hostile file is in
the quarantine table with its reason (issue 24, items 1-5, through the whole pipeline)."""

from __future__ import annotations

from pathlib import Path

from corpusmill.store import Store
from tests.runs import ingest, tiny_settings
from tools.sample_documents import docx, pdf


def test_a_mixed_folder_with_hostile_files_ingests_the_good_ones(
    tmp_path, db_uri, tiny_embedder_path
):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "paper.pdf").write_bytes(
        pdf(["Photosynthesis turns light into sugar.", "Respiration burns it."], title="Paper")
    )
    (corpus / "notes.docx").write_bytes(
        docx([("heading1", "Notes"), ("p", "Glaciers carve valleys.")])
    )
    (corpus / "page.html").write_text(
        "<!DOCTYPE html><html><head><meta charset=utf-8><title>Doc</title>"
        "<body><p>Body text</p></body></html>"
    )
    (corpus / "readme.md").write_text("# Readme\n\nMarkdown body.")
    (corpus / "plain.txt").write_text("Plain text body.")
    (corpus / "scan.pdf").write_bytes(pdf(["", ""], image_only=True))
    (corpus / "locked.pdf").write_bytes(pdf(["secret"], user_password="pw"))
    (corpus / "broken.pdf").write_bytes(pdf(["cut short"])[:300])
    (corpus / "fake.docx").write_bytes(b"PK\x03\x04 not really a zip")

    summary = ingest([corpus], tiny_settings(db_uri, tiny_embedder_path))

    assert summary["success"]
    store = Store(db_uri)
    docs = store.scan("documents", ["uri", "title", "text"]).to_pylist()
    by_name = {Path(d["uri"]).name: d for d in docs}
    assert set(by_name) == {"paper.pdf", "notes.docx", "page.html", "readme.md", "plain.txt"}
    assert by_name["paper.pdf"]["title"] == "Paper"
    assert "Respiration burns it." in by_name["paper.pdf"]["text"]
    assert (by_name["page.html"]["title"], by_name["page.html"]["text"]) == ("Doc", "Body text")
    chunk_docs = set(store.scan("embeddings", ["doc_id"])["doc_id"].to_pylist())
    assert len(chunk_docs) == 5  # every good document was embedded
    bad = {
        Path(r["uri"]).name: r["reason"]
        for r in store.scan("quarantine", ["uri", "reason"]).to_pylist()
    }
    assert bad["scan.pdf"].startswith("no text layer")
    assert "password" in bad["locked.pdf"]
    assert "PDF" in bad["broken.pdf"]
    assert "zip" in bad["fake.docx"]
    assert set(bad) == {"scan.pdf", "locked.pdf", "broken.pdf", "fake.docx"}


def test_the_limits_in_the_settings_reach_the_readers_of_a_run_and_of_the_sensor(
    tmp_path, db_uri, tiny_embedder_path
):
    """CORPUSMILL_MAX_PAGES and CORPUSMILL_EXTRACT_TIMEOUT, from `Settings` down to the
    extractor, in an ingest run and in the inbox sensor (which hands them to its run)."""
    import dagster as dg

    from resources import build_resources
    from sensors.inbox import build_inbox_sensor
    from tools.sample_documents import stream_pdf

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "three-pages.pdf").write_bytes(pdf(["one", "two", "three"]))
    (corpus / "two-pages.pdf").write_bytes(pdf(["one", "two"]))
    (corpus / "slow.pdf").write_bytes(
        stream_pdf(b"BT /F1 10 Tf 50 760 Td " + b"(ab) Tj " * 3_000_000 + b"ET")
    )
    settings = tiny_settings(
        db_uri, tiny_embedder_path, max_pages=2, extract_timeout=0.5, inbox=str(corpus)
    )
    expected = {
        "three-pages.pdf": "PDF has 3 pages, over the limit of 2 (CORPUSMILL_MAX_PAGES)",
        "slow.pdf": "longer than 0.5 s",
    }
    summary = ingest([corpus], settings)
    assert summary["success"] and summary["documents"] == 1
    bad = {
        Path(r["uri"]).name: r["reason"]
        for r in Store(db_uri).scan("quarantine", ["uri", "reason"]).to_pylist()
    }
    assert set(bad) == set(expected)
    for name, phrase in expected.items():
        assert phrase in bad[name] and "CORPUSMILL_" in bad[name]

    sensor = build_inbox_sensor(settings, name="limits_sensor")
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(),
        sensor_name="limits_sensor",
        resources={"store": build_resources(settings)["store"]},
    )
    (request,) = sensor(context).run_requests
    config = request.run_config["ops"]["raw_corpus"]["config"]
    assert (config["max_pages"], config["extract_timeout"]) == (2, 0.5)
