"""PDF to text, page by page, with pypdf (BSD, pure Python; AES through `cryptography`).

Text comes in the order pypdf's extractor gives it (content-stream order, lines
rebuilt from positions), one page after another; the document keeps where each physical
page starts and, where the file has an outline (bookmarks), where each entry's heading
starts. Title and author come from the document information dictionary.

Runs in the extractor worker (`corpusmill.sources.isolation`): `extract_pdf(data,
limits)` returns the `Extracted` text or the reason it cannot.
"""

from __future__ import annotations

import io
import time
from dataclasses import replace

from corpusmill.sources.document import Extracted, Section, TextBuilder
from corpusmill.sources.isolation import ReadLimits, timeout_reason

MAX_OUTLINE_ENTRIES = 10_000  # more is a bomb, not a table of contents


def extract_pdf(data: bytes, limits: ReadLimits) -> Extracted | str:
    from pypdf import PasswordType, PdfReader
    from pypdf.errors import DependencyError, EmptyFileError

    deadline = time.monotonic() + limits.timeout_s
    if not data:
        return "empty PDF file"
    if b"%PDF-" not in data[:1024]:  # where readers look for the header
        return "not a PDF file (no %PDF- header in its first 1 KB)"
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
    except EmptyFileError:
        return "empty PDF file"
    except Exception as exc:  # pypdf raises many types on a damaged file
        return f"unreadable PDF ({_why(exc)})"
    if reader.is_encrypted:
        try:
            opened = reader.decrypt("")
        except DependencyError as exc:
            return f"encrypted PDF that cannot be decrypted here ({_why(exc)})"
        except Exception as exc:
            return f"encrypted PDF that cannot be opened ({_why(exc)})"
        if opened == PasswordType.NOT_DECRYPTED:
            return "encrypted PDF: opening it needs a password"
    try:
        n_pages = len(reader.pages)
    except RecursionError:
        return "unreadable PDF (page tree nested too deeply)"
    except Exception as exc:
        return f"unreadable PDF: cannot list its pages ({_why(exc)})"
    if n_pages == 0:
        return "PDF has no pages (an empty or broken page tree)"
    if n_pages > limits.max_pages:
        return (
            f"PDF has {n_pages} pages, over the limit of {limits.max_pages} (CORPUSMILL_MAX_PAGES)"
        )
    out = TextBuilder()
    for i in range(n_pages):
        if time.monotonic() > deadline:
            return timeout_reason(limits, f" (stopped at page {i + 1} of {n_pages})")
        out.new_page()
        try:
            out.add(reader.pages[i].extract_text())
        except RecursionError:
            return f"page {i + 1}: content nested too deeply to parse"
        except Exception as exc:
            return f"cannot extract the text of page {i + 1} ({_why(exc)})"
    title, author = _metadata(reader)
    extracted = out.build(title=title, author=author)
    if not extracted.text:
        return f"no text layer ({n_pages} pages of images or nothing: a scan needs OCR first)"
    sections = _outline(reader, extracted, deadline)
    if sections:
        structure = replace(extracted.structure, sections=sections)
        extracted = replace(extracted, structure=structure)
    return extracted


def _why(exc: BaseException) -> str:
    detail = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _metadata(reader) -> tuple[str, str]:
    """(title, author), "" where absent or unreadable: they are extras, never a reason."""
    try:
        meta = reader.metadata
        title, author = (meta.title, meta.author) if meta is not None else ("", "")
    except Exception:
        return "", ""
    return (t if isinstance(t, str) else "" for t in (title, author))  # type: ignore[return-value]


def _outline(reader, extracted: Extracted, deadline: float) -> tuple[Section, ...]:
    """The outline's entries as sections, in text order. An entry's offset is where its
    title appears on its target page (searched after the previous entry on that page),
    else the page's start. A broken outline gives no sections, never a quarantine."""
    text, pages = extracted.text, extracted.structure.pages
    try:
        stack = [(iter(reader.outline), 1)]
        found: list[Section] = []
        last_on_page: dict[int, int] = {}
        while stack and len(found) < MAX_OUTLINE_ENTRIES and time.monotonic() < deadline:
            entries, level = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                continue
            if isinstance(entry, list):
                stack.append((iter(entry), level + 1))
                continue
            title = " ".join(str(entry.title or "").split())
            page = reader.get_destination_page_number(entry)
            if not title or page is None or not 0 <= page < len(pages):
                continue
            start = pages[page]
            end = pages[page + 1] if page + 1 < len(pages) else len(text)
            after = last_on_page.get(page, start)
            at = _find(text, title, after, end)
            offset = at if at >= 0 else start
            last_on_page[page] = max(after, offset)
            found.append(Section(offset, level, title))
    except Exception:  # RecursionError included: a looping outline
        return ()
    return tuple(sorted(found, key=lambda s: s.offset))


def _find(text: str, title: str, start: int, end: int) -> int:
    """Where `title` starts in `text[start:end]`, whitespace-insensitive; -1 if absent."""
    words = title.split()
    first = text.find(words[0], start, end)
    while first >= 0:
        probe = " ".join(text[first : min(end, first + len(title) * 2)].split())
        if probe.startswith(title):
            return first
        first = text.find(words[0], first + 1, end)
    return -1
