"""What a reader yields: a `Document` (text, and where its pages and sections start) or a
`Quarantined` record with the reason a file could not be read.

A document's layout travels as offsets into its `text`, not as separate pieces, so the
text is chunked exactly as before and any character span (a chunk) can be mapped back to
the pages it spans and the section it sits in (`Structure.pages_of`, `section_path`).
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from dataclasses import dataclass, field

from corpusmill.ids import content_hash, doc_id_for, record_id_for


@dataclass(frozen=True)
class Section:
    """A heading: where it starts in the text, its depth (0: a document title, 1: a
    chapter, 2: a section of it, ...) and its words."""

    offset: int
    level: int
    title: str


@dataclass(frozen=True)
class Structure:
    """The layout of a document's `text`.

    `pages[i]` is where physical page i + 1 starts (a PDF viewer's numbering, not the
    printed label); an empty page starts where the next page with text does. Sections are
    in text order. Both are empty for formats without them.
    """

    pages: tuple[int, ...] = ()
    sections: tuple[Section, ...] = ()

    def pages_of(self, start: int, end: int) -> tuple[int, int] | None:
        """(first, last) page, numbered from 1, holding `text[start:end]`; None without pages."""
        if not self.pages:
            return None
        first = max(bisect_right(self.pages, start), 1)
        last = max(bisect_right(self.pages, max(end - 1, start)), first)
        return first, last

    def section_path(self, offset: int) -> tuple[str, ...]:
        """The headings in force at `offset`, outermost first: ("2 Methods", "2.1 Data")."""
        path: list[Section] = []
        for section in self.sections:
            if section.offset > offset:
                break
            while path and path[-1].level >= section.level:
                path.pop()
            path.append(section)
        return tuple(s.title for s in path)

    def to_json(self) -> str:
        """The form a table column can hold (`from_json` reads it back)."""
        return json.dumps(
            {
                "pages": list(self.pages),
                "sections": [[s.offset, s.level, s.title] for s in self.sections],
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, data: str) -> Structure:
        raw = json.loads(data) if data else {}
        return cls(
            pages=tuple(raw.get("pages", ())),
            sections=tuple(Section(o, lv, t) for o, lv, t in raw.get("sections", ())),
        )


@dataclass(frozen=True)
class Extracted:
    """What a format reader made of one file, before it gets its identity."""

    text: str
    title: str = ""
    author: str = ""
    structure: Structure = field(default_factory=Structure)


@dataclass(frozen=True)
class Document:
    doc_id: str
    source: str
    uri: str
    title: str
    text: str
    content_hash: str
    author: str = ""
    structure: Structure = field(default_factory=Structure)
    # What the source says identifies the bytes this document was read from, when that is
    # cheap to compare without reading them: an object's ETag and size, with the reader's
    # version (`sources.objects.signature`). "" for files, records and pydoc.
    signature: str = ""

    @property
    def body(self) -> str:
        return document_body(self.title, self.text)


def document_body(title: str, text: str) -> str:
    """What gets chunked and embedded: title, then text (MTEB encodes BEIR documents the
    same way, with a space; the tokenizer treats both alike)."""
    return f"{title}\n{text}".strip() if title else text


def body_offset(title: str, text: str) -> int:
    """Where `text` starts inside `document_body(title, text)`: subtract it from a chunk's
    span in the body to get offsets `Structure` understands."""
    return len(document_body(title, text)) - len(text)


# 2: chunks store their pages and section (issue 24), so documents read with a layout
# before that are re-chunked once to gain them.
LAYOUT_VERSION = "layout-2"


@dataclass(frozen=True)
class Location:
    """Where a chunk sits: its pages (first, last; None for formats without pages) and
    the headings in force where it starts, outermost first."""

    pages: tuple[int, int] | None
    section: tuple[str, ...]


def locate(
    title: str, text: str, structure: Structure, start: int, end: int, shift: int | None = None
) -> Location:
    """The location of `body[start:end]`, a span of `document_body(title, text)` as the
    chunker cuts it; a span inside the title counts as the text's first character.
    `shift`: `body_offset(title, text)` when the caller has it (it copies the text)."""
    shift = body_offset(title, text) if shift is None else shift
    first, last = max(start - shift, 0), max(end - shift, 1)
    return Location(structure.pages_of(first, last), structure.section_path(first))


@dataclass(frozen=True)
class Quarantined:
    doc_id: str  # the id the document would have had; its stored rows are kept
    source: str
    uri: str
    reason: str


@dataclass(frozen=True)
class Unchanged:
    """A document not read again: its object's signature is the one the store holds for
    it (`Document.signature`), so its stored row stands."""

    doc_id: str
    uri: str


@dataclass(frozen=True)
class SetAside:
    """A document a run must not read (its stored row, if at `content_hash`, removed so
    no later stage takes it up): quarantined with `reason` when given, else only held
    back while other documents go first."""

    doc_id: str
    content_hash: str
    uri: str
    reason: str = ""


# A file or object that went away between the listing and the read: quarantined for this
# read, never remembered (a cache must not keep it; it may come back).
FILE_REMOVED = "file was removed between listing and reading"
OBJECT_REMOVED = "object was removed between listing and reading"
TRANSIENT_REASONS = frozenset({FILE_REMOVED, OBJECT_REMOVED})


def make_document(
    source: str,
    key: str,
    uri: str,
    title: str,
    text: str,
    record: str | None = None,
    *,
    author: str = "",
    structure: Structure = Structure(),
) -> Document:
    """A file's (or pydoc topic's) document, or with `record` one record of a file.

    Author and layout count in the content hash only when present, so documents without
    them keep the hash they always had (and are not re-chunked), while a PDF whose outline
    or page breaks moved is re-chunked, and its chunks' pages and sections rewritten. So
    does `LAYOUT_VERSION`, the version of the rules (`locate`) that place chunks on a
    layout: changing them re-chunks exactly the documents that have one.
    """
    # A lone surrogate (a JSON string may hold `\udcff`) cannot be written: U+FFFD.
    title, text, author = (_SURROGATES.sub("\ufffd", s) for s in (title, text, author))
    extra = (
        (author, structure.to_json(), LAYOUT_VERSION) if author or structure != Structure() else ()
    )
    return Document(
        doc_id=doc_id_for(source, key) if record is None else record_id_for(source, key, record),
        source=source,
        uri=uri,
        title=title,
        text=text,
        content_hash=content_hash(title, text, *extra),
        author=author,
        structure=structure,
    )


class TextBuilder:
    """Builds a document's text block by block, recording where pages and headings start.

    Blocks are joined by one newline, pages by a blank line. Text is cleaned on the way in:
    NUL and other C0 controls except tab and newline are dropped, and lone surrogates (a
    broken font map gives them) become U+FFFD, so the text is always valid UTF-8.
    """

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.pages: list[int] = []
        self.empty_pages = 0  # pages still waiting for the offset of the next text
        self.sections: list[Section] = []
        self._page_break = False

    def new_page(self) -> None:
        self.empty_pages += 1
        self._page_break = True

    def add(self, text: str, heading_level: int | None = None) -> None:
        text = clean_text(text).strip()
        if not text:
            return
        if self.size:
            sep = "\n\n" if self._page_break else "\n"
            self.parts.append(sep)
            self.size += len(sep)
        self._page_break = False
        self.pages.extend([self.size] * self.empty_pages)
        self.empty_pages = 0
        if heading_level is not None:
            self.sections.append(Section(self.size, heading_level, " ".join(text.split())))
        self.parts.append(text)
        self.size += len(text)

    def section_at(self, offset: int, level: int, title: str) -> None:
        """A heading known only by position (a PDF outline entry), not by a block."""
        self.sections.append(Section(offset, level, title))

    def build(self, title: str = "", author: str = "") -> Extracted:
        pages = self.pages + [self.size] * self.empty_pages
        sections = sorted(self.sections, key=lambda s: s.offset)  # stable: keeps order at ties
        return Extracted(
            text="".join(self.parts),
            title=" ".join(clean_text(title).split()),
            author=" ".join(clean_text(author).split()),
            structure=Structure(tuple(pages), tuple(sections)),
        )


_CONTROLS = {c: None for c in range(32) if c not in (9, 10)} | {13: 10}
_SURROGATES = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Text safe to store: CR LF and lone CRs as LF, other C0 controls but tab dropped,
    lone surrogates as U+FFFD."""
    return _SURROGATES.sub("\ufffd", text.replace("\r\n", "\n").translate(_CONTROLS))
