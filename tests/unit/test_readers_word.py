"""Word (.docx) reading: paragraphs, headings, lists and tables in document order, headings
as sections, core properties as title and author (issue 24, item 2)."""

from __future__ import annotations

import io
import zipfile

from corpusmill.sources import Document, Quarantined, read_source
from tools.sample_documents import docx

BLOCKS = [
    ("title", "Field guide"),
    ("heading1", "Birds"),
    ("p", "Birds have feathers."),
    ("bullet", "Robins sing at dawn"),
    ("bullet", "Owls hunt at night"),
    ("heading2", "Measurements"),
    ("table", [["Species", "Wingspan"], ["Robin", "22 cm"], ["Owl", "95 cm"]]),
    ("number", "Weigh the bird"),
    ("heading1", "Trees"),
    ("p", "Oaks live for centuries."),
]


def _read(tmp_path, name: str, data: bytes):
    (tmp_path / name).write_bytes(data)
    (item,) = read_source(str(tmp_path / name), label="t")
    return item


def test_blocks_come_out_in_document_order(tmp_path):
    doc = _read(tmp_path, "guide.docx", docx(BLOCKS, title="Guide", author="B. Writer"))
    assert isinstance(doc, Document)
    assert (doc.title, doc.author) == ("Guide", "B. Writer")
    assert doc.text.split("\n") == [
        "Field guide",
        "Birds",
        "Birds have feathers.",
        "- Robins sing at dawn",
        "- Owls hunt at night",
        "Measurements",
        "Species | Wingspan",
        "Robin | 22 cm",
        "Owl | 95 cm",
        "- Weigh the bird",
        "Trees",
        "Oaks live for centuries.",
    ]


def test_headings_are_sections_so_text_knows_its_section(tmp_path):
    doc = _read(tmp_path, "guide.docx", docx(BLOCKS))
    assert isinstance(doc, Document)
    assert [(s.title, s.level) for s in doc.structure.sections] == [
        ("Field guide", 0),
        ("Birds", 1),
        ("Measurements", 2),
        ("Trees", 1),
    ]
    assert doc.structure.pages == ()  # a .docx has no fixed pages
    path = doc.structure.section_path
    assert path(doc.text.index("Owl | 95")) == ("Field guide", "Birds", "Measurements")
    assert path(doc.text.index("Oaks")) == ("Field guide", "Trees")


def test_a_zip_of_something_else_is_quarantined(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("photo.jpg", b"\xff\xd8\xff" + b"\x00" * 100)
    item = _read(tmp_path, "fake.docx", buf.getvalue())
    assert isinstance(item, Quarantined) and item.reason.startswith("not a Word document")


def test_not_a_zip_at_all_is_quarantined(tmp_path):
    item = _read(tmp_path, "text.docx", b"just some text, saved with the wrong name")
    assert isinstance(item, Quarantined) and "not a readable zip" in item.reason


def test_a_password_protected_word_file_is_quarantined(tmp_path):
    """Office wraps a password-protected document in an OLE2 container."""
    item = _read(tmp_path, "locked.docx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600)
    assert isinstance(item, Quarantined) and "password-protected" in item.reason


def test_an_empty_document_is_quarantined_as_empty(tmp_path):
    item = _read(tmp_path, "empty.docx", docx([("p", "   ")]))
    assert isinstance(item, Quarantined) and "empty" in item.reason
