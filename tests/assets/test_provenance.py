"""Every chunk records the pages it spans and its section, and every hit carries them
(issue 24): checked against an oracle built from the words on each page and under each
heading, through real ingest runs (tiny embedder, real LanceDB). A document whose layout
changes is re-chunked and its rows rewritten without embedding anything; a store from
before the columns keeps answering, and gains them."""

from __future__ import annotations

from pathlib import Path

from corpusmill.model import Model, ModelSpec
from corpusmill.search import Searcher
from corpusmill.sources import document as document_module
from corpusmill.store import Store
from tests.runs import ingest, tiny_settings
from tools.sample_documents import docx, pdf

# Each page, and each block under a heading, has words found nowhere else: where a chunk's
# words come from says which pages it spans, where its first word comes from says its
# section.
PAGES = [
    " ".join(f"apple{i}" for i in range(14)),
    " ".join(f"brook{i}" for i in range(14)),
    " ".join(f"cedar{i}" for i in range(14)),
    " ".join(f"delta{i}" for i in range(14)),
]
OUTLINE = [("Opening", 0, 1), ("Middle", 1, 1), ("Detail", 2, 2), ("Closing", 3, 1)]
BLOCKS = [
    ("heading1", "Background"),
    ("p", " ".join(f"ember{i}" for i in range(20))),
    ("heading2", "Details"),
    ("p", " ".join(f"fjord{i}" for i in range(20))),
    ("heading1", "Results"),
    ("p", " ".join(f"grove{i}" for i in range(20))),
]
SECTION_OF = {
    "Background": ["Background"],
    "ember": ["Background"],
    "Details": ["Background", "Details"],
    "fjord": ["Background", "Details"],
    "Results": ["Results"],
    "grove": ["Results"],
}


def _corpus(root: Path, outline=OUTLINE) -> Path:
    root.mkdir(exist_ok=True)
    (root / "paper.pdf").write_bytes(pdf(PAGES, outline=outline))
    (root / "notes.docx").write_bytes(docx(BLOCKS))
    (root / "plain.txt").write_text("hollow " * 30)
    return root


def _chunks(store: Store, table: str, name: str) -> list[dict]:
    rows = store.scan(
        table, ["uri", "position", "text", "page_first", "page_last", "section", "doc_hash"]
    ).to_pylist()
    return sorted((r for r in rows if r["uri"].endswith(name)), key=lambda r: r["position"])


def _pages_by_words(text: str) -> tuple[int, int]:
    pages = [n for n, page in enumerate(PAGES, 1) if set(page.split()) & set(text.split())]
    return min(pages), max(pages)


def _section_by_first_word(text: str) -> list[str]:
    first = text.split()[0]
    return SECTION_OF[first.rstrip("0123456789")]


def test_every_chunk_knows_its_pages_and_section_and_so_does_every_hit(
    tmp_path, db_uri, tiny_embedder_path
):
    corpus = _corpus(tmp_path / "corpus")
    settings = tiny_settings(db_uri, tiny_embedder_path)
    assert ingest([corpus], settings)["success"]
    store = Store(db_uri)
    for table in ("chunks", "embeddings"):
        paper = _chunks(store, table, "paper.pdf")
        assert len(paper) >= 4, "several chunks, so spans cross pages"
        for c in paper:
            assert (c["page_first"], c["page_last"]) == _pages_by_words(c["text"]), c
        assert any(c["page_first"] != c["page_last"] for c in paper), "one spans two pages"
        notes = _chunks(store, table, "notes.docx")
        assert len(notes) >= 3
        for c in notes:
            assert c["section"] == _section_by_first_word(c["text"]), c
            assert c["page_first"] is None and c["page_last"] is None
        (plain,) = _chunks(store, table, "plain.txt")[:1]
        assert (plain["page_first"], plain["page_last"], plain["section"]) == (None, None, None)
    # The PDF's outline gives it sections too: the last page is under "Closing".
    assert _chunks(store, "chunks", "paper.pdf")[-1]["section"] == ["Closing"]

    searcher = Searcher(
        db_uri, embedder=Model(ModelSpec(path=str(tiny_embedder_path), dtype="float32"))
    )
    (hit,) = searcher.search("cedar5 cedar6", k=1, mode="fts")
    assert hit.uri.endswith("paper.pdf") and hit.page_first <= 3 <= hit.page_last
    assert hit.as_dict()["page_first"] == hit.page_first and "section" in hit.as_dict()
    assert hit.citation().startswith("p") and "§ " in hit.citation()
    (hit,) = searcher.search("fjord7", k=1, mode="fts")
    assert hit.section == ["Background", "Details"] and hit.page_first is None
    assert hit.citation() == "§ Background › Details"
    (hit,) = searcher.search("hollow", k=1, mode="fts")
    assert (hit.page_first, hit.section, hit.citation()) == (None, None, "")


def test_a_changed_layout_rechunks_and_rewrites_locations_without_embedding(
    tmp_path, db_uri, tiny_embedder_path
):
    corpus = _corpus(tmp_path / "corpus")
    settings = tiny_settings(db_uri, tiny_embedder_path)
    assert ingest([corpus], settings)["success"]
    # The same pages, another outline: the text is the same, the sections are not.
    moved = [("Opening", 0, 1), ("Everything after", 1, 1)]
    (corpus / "paper.pdf").write_bytes(pdf(PAGES, outline=moved))
    second = ingest([corpus], settings)
    assert second["success"] and second["documents_changed"] == 1
    assert second["chunks_embedded"] == 0, "same chunk texts: every vector is reused"
    store = Store(db_uri)
    doc_hash = store.scan("documents", ["uri", "content_hash"]).to_pylist()
    (new_hash,) = [d["content_hash"] for d in doc_hash if d["uri"].endswith("paper.pdf")]
    for table in ("chunks", "embeddings"):
        paper = _chunks(store, table, "paper.pdf")
        assert {c["doc_hash"] for c in paper} == {new_hash}, table
        assert paper[-1]["section"] == ["Everything after"], table
        assert paper[0]["section"] == ["Opening"], table


def test_a_store_from_before_locations_answers_and_gains_them(
    tmp_path, db_uri, tiny_embedder_path, monkeypatch
):
    """A store written before issue 24's columns: its tables lack them and its structured
    documents carry the hash of the older layout version."""
    corpus = _corpus(tmp_path / "corpus")
    settings = tiny_settings(db_uri, tiny_embedder_path)
    with monkeypatch.context() as patch:
        patch.setattr(document_module, "LAYOUT_VERSION", "layout-1")
        assert ingest([corpus], settings)["success"]
    store = Store(db_uri)
    store.open("documents").drop_columns(["author", "structure", "signature"])
    for table in ("chunks", "embeddings"):
        store.open(table).drop_columns(["page_first", "page_last", "section"])
    searcher = Searcher(
        db_uri, embedder=Model(ModelSpec(path=str(tiny_embedder_path), dtype="float32"))
    )
    (old_hit,) = searcher.search("cedar5", k=1, mode="fts")
    assert old_hit.uri.endswith("paper.pdf") and old_hit.page_first is None

    again = ingest([corpus], settings)
    assert again["success"] and again["chunks_embedded"] == 0
    assert again["documents_changed"] == 2, "the PDF and the Word file: they have a layout"
    (hit,) = searcher.search("cedar5", k=1, mode="fts")
    assert hit.page_first <= 3 <= hit.page_last
    (plain,) = searcher.search("hollow", k=1, mode="fts")
    assert plain.section is None
