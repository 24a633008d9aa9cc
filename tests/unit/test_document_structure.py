"""A document's layout as offsets into its text: pages a span covers, the section path at
an offset, the column form, and what the content hash includes."""

from __future__ import annotations

from corpusmill.ids import content_hash
from corpusmill.sources import (
    Location,
    Section,
    Structure,
    body_offset,
    document_body,
    locate,
    make_document,
)
from corpusmill.sources.document import TextBuilder, clean_text


def _book() -> tuple[str, Structure]:
    out = TextBuilder()
    for page in (["Cover"], [], ["Ch 1", "Text one."], ["More one."], []):
        out.new_page()
        for block in page:
            out.add(block, heading_level=1 if block.startswith("Ch") else None)
    built = out.build()
    return built.text, built.structure


def test_pages_start_where_their_text_starts_and_empty_pages_take_the_next_start():
    text, s = _book()
    assert text == "Cover\n\nCh 1\nText one.\n\nMore one."
    ch1, more = text.index("Ch 1"), text.index("More")
    assert s.pages == (0, ch1, ch1, more, len(text))
    assert s.pages_of(0, 5) == (1, 1)
    assert s.pages_of(ch1, ch1 + 4) == (3, 3)  # page 2 is empty: nothing is on it
    assert s.pages_of(text.index("Text"), more + 4) == (3, 4)
    assert s.pages_of(len(text) - 1, len(text)) == (4, 4)
    assert Structure().pages_of(0, 10) is None


def test_the_section_path_follows_heading_levels():
    s = Structure(
        sections=(
            Section(0, 0, "Title"),
            Section(10, 1, "A"),
            Section(20, 2, "A.1"),
            Section(30, 2, "A.2"),
            Section(40, 1, "B"),
        )
    )
    assert s.section_path(5) == ("Title",)
    assert s.section_path(25) == ("Title", "A", "A.1")
    assert s.section_path(30) == ("Title", "A", "A.2")
    assert s.section_path(45) == ("Title", "B")
    assert Structure().section_path(3) == ()


def test_the_column_form_round_trips():
    s = Structure(pages=(0, 7, 7, 19), sections=(Section(7, 1, "Intro \u00e9"),))
    assert Structure.from_json(s.to_json()) == s
    assert Structure.from_json("") == Structure()


def test_body_offsets_map_back_to_text_offsets():
    for title, text in [("", "abc"), ("Title", "abc"), ("  Padded ", "abc")]:
        body = document_body(title, text)
        assert body[body_offset(title, text) :] == text


def test_plain_documents_keep_the_hash_they_always_had():
    doc = make_document("src", "a.txt", "/a.txt", "T", "text")
    assert doc.content_hash == content_hash("T", "text")
    paged = make_document("src", "a.pdf", "/a.pdf", "T", "text", structure=Structure(pages=(0,)))
    authored = make_document("src", "a.pdf", "/a.pdf", "T", "text", author="Ann")
    assert len({doc.content_hash, paged.content_hash, authored.content_hash}) == 3


def test_text_is_cleaned_of_nul_controls_and_lone_surrogates():
    """A broken PDF font map yields these; Arrow refuses to write lone surrogates."""
    assert clean_text("a\x00b\x0cc\r\nd\ud800e\tf") == "abc\nd\ufffde\tf"
    out = TextBuilder()
    out.add("\x00\x01  ")  # nothing left after cleaning: no block, no separator
    out.add("x\udfffy", heading_level=1)
    built = out.build(title="T\x00itle\ud83d")
    assert built.text == "x\ufffdy" and built.title == "Title\ufffd"
    built.text.encode("utf-8")  # valid UTF-8 throughout


def test_a_chunk_span_of_the_body_is_located_in_pages_and_sections():
    """What phase 2 calls per chunk: the chunker's spans are offsets into the body
    (title, newline, text), the structure's into the text."""
    text, s = _book()
    title = "Book"
    body = document_body(title, text)
    start = body.index("Text one.")
    assert locate(title, text, s, start, start + 9) == Location((3, 3), ("Ch 1",))
    assert locate(title, text, s, 0, len(body)) == Location((1, 4), ())
    assert locate("", "plain", Structure(), 0, 5) == Location(None, ())
