"""PDF reading: text on the right physical pages, title and author, the outline as
sections, encrypted files, and scans without a text layer (issue 24, item 1)."""

from __future__ import annotations

import pytest

from corpusmill.sources import (
    Document,
    Quarantined,
    ReadLimits,
    ReadOptions,
    body_offset,
    read_source,
)
from tools.sample_documents import pdf, raw_pdf

PAGES = [
    "Mitochondria make ATP in the cell.",
    "",  # an empty page: page 3 must still be page 3
    "Ribosomes build proteins from amino acids.\nThe genetic code is read in triplets.",
    "Chloroplasts capture light in plant cells.",
]


def _read(tmp_path, name: str, data: bytes, limits: ReadLimits | None = None):
    (tmp_path / name).write_bytes(data)
    (item,) = read_source(
        str(tmp_path / name), label="t", options=ReadOptions(limits=limits or ReadLimits())
    )
    return item


def _page_of(doc: Document, phrase: str) -> tuple[int, int] | None:
    start = doc.text.index(phrase)
    return doc.structure.pages_of(start, start + len(phrase))


@pytest.mark.parametrize("isolate", [True, False])
def test_text_lands_on_its_physical_page_with_title_and_author(tmp_path, isolate):
    doc = _read(
        tmp_path,
        "cells.pdf",
        pdf(PAGES, title="Cell biology", author="A. Author"),
        ReadLimits(isolate=isolate),
    )
    assert isinstance(doc, Document)
    assert (doc.title, doc.author) == ("Cell biology", "A. Author")
    assert len(doc.structure.pages) == 4
    assert _page_of(doc, "Mitochondria make ATP") == (1, 1)
    assert _page_of(doc, "Ribosomes build proteins") == (3, 3)
    assert _page_of(doc, "read in triplets") == (3, 3)
    assert _page_of(doc, "Chloroplasts capture light") == (4, 4)
    span = doc.text.index("genetic"), doc.text.index("plant")
    assert doc.structure.pages_of(*span) == (3, 4)
    # The body the chunker sees starts with the title; its offsets map back through
    # body_offset.
    at = doc.body.index("Chloroplasts") - body_offset(doc.title, doc.text)
    assert doc.structure.pages_of(at, at + 5) == (4, 4)


def test_no_metadata_gives_an_empty_title_and_author(tmp_path):
    doc = _read(tmp_path, "plain.pdf", pdf(["Some text."]))
    assert isinstance(doc, Document) and (doc.title, doc.author) == ("", "")
    assert doc.body == "Some text."


def test_the_outline_becomes_sections_at_their_headings(tmp_path):
    pages = [
        "1 Introduction\nWhy cells matter.",
        "2 Methods\nWe counted cells.\n2.1 Staining\nDyes mark the nucleus.",
        "3 Results\nThere were many.",
    ]
    outline = [
        ("1 Introduction", 0, 1),
        ("2 Methods", 1, 1),
        ("2.1 Staining", 1, 2),
        ("3 Results", 2, 1),
    ]
    doc = _read(tmp_path, "paper.pdf", pdf(pages, outline=outline))
    assert isinstance(doc, Document)
    sections = doc.structure.sections
    assert [(s.title, s.level) for s in sections] == [(t, lv) for t, _, lv in outline]
    for section in sections:  # each heading is found on its page, not just the page start
        assert doc.text[section.offset :].startswith(section.title)
    path = doc.structure.section_path
    assert path(doc.text.index("We counted")) == ("2 Methods",)
    assert path(doc.text.index("Dyes mark")) == ("2 Methods", "2.1 Staining")
    assert path(doc.text.index("There were")) == ("3 Results",)


def test_a_layout_change_with_the_same_text_changes_the_hash(tmp_path):
    """The chunks' pages come from the structure: a moved bookmark must re-chunk."""
    pages = ["Alpha text.", "Beta text."]
    a = _read(tmp_path, "a.pdf", pdf(pages, outline=[("Beta", 1, 1)]))
    b = _read(tmp_path, "b.pdf", pdf(pages, outline=[("Beta", 0, 1)]))
    assert isinstance(a, Document) and isinstance(b, Document)
    assert a.text == b.text and a.content_hash != b.content_hash


@pytest.mark.parametrize("image_only", [True, False])
def test_a_scan_without_a_text_layer_is_quarantined(tmp_path, image_only):
    data = pdf(["", ""], image_only=image_only)
    item = _read(tmp_path, "scan.pdf", data)
    assert isinstance(item, Quarantined)
    assert item.reason.startswith("no text layer")


def test_encrypted_with_an_empty_password_is_read(tmp_path):
    doc = _read(tmp_path, "open.pdf", pdf(PAGES, title="Locked", user_password=""))
    assert isinstance(doc, Document)
    assert doc.title == "Locked" and "Ribosomes" in doc.text


def test_encrypted_with_a_password_is_quarantined(tmp_path):
    item = _read(tmp_path, "locked.pdf", pdf(PAGES, user_password="s3cret"))
    assert isinstance(item, Quarantined)
    assert "password" in item.reason


def test_a_pdf_over_the_page_limit_is_quarantined_with_the_setting(tmp_path):
    item = _read(tmp_path, "long.pdf", pdf(["page"] * 12), ReadLimits(max_pages=10))
    assert isinstance(item, Quarantined)
    assert "12 pages" in item.reason and "CORPUSMILL_MAX_PAGES" in item.reason


def test_the_deadline_is_checked_between_pages(tmp_path):
    item = _read(tmp_path, "slow.pdf", pdf(["a", "b"]), ReadLimits(timeout_s=0, isolate=False))
    assert isinstance(item, Quarantined)
    assert "stopped at page 1 of 2" in item.reason


def test_a_pdf_without_pages_says_so(tmp_path):
    item = _read(tmp_path, "none.pdf", raw_pdf([]))
    assert isinstance(item, Quarantined) and item.reason.startswith("PDF has no pages")
