"""Word (.docx) to text with python-docx (MIT): paragraphs, headings, list items and
table rows, in document order (content controls opened, a table one line per row with
its cells joined by " | ", a list item marked "- "). Headings ("Title", "Heading 1-9",
or an outline level) become sections. Title and author come from the core properties.

Runs in the extractor worker (`corpusmill.sources.isolation`). A .docx is a zip: its
declared unpacked size is checked first (zipfile never inflates past what an entry
declares), so a zip bomb is refused before any XML is parsed.
"""

from __future__ import annotations

import io
import time
import zipfile

from corpusmill.sources.document import Extracted, TextBuilder
from corpusmill.sources.isolation import ReadLimits, timeout_reason

# An OLE2 compound file: a legacy .doc, or any Office file saved with a password
# (Office encrypts the zip and wraps it in one).
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def unzipped_limit(limits: ReadLimits) -> int:
    """Most bytes a .docx may unpack to: an lxml tree takes several times its XML."""
    return limits.memory_mb * 2**20 // 8


def extract_docx(data: bytes, limits: ReadLimits) -> Extracted | str:
    deadline = time.monotonic() + limits.timeout_s
    if data.startswith(OLE_MAGIC):
        return "password-protected or legacy Word file (an OLE container, not a .docx zip)"
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        return f"not a .docx: not a readable zip ({exc})"
    if unpacked > unzipped_limit(limits):
        return (
            f"not read: unpacks to {unpacked // 2**20} MB, over the limit of "
            f"{unzipped_limit(limits) // 2**20} MB (CORPUSMILL_EXTRACT_MEMORY_MB / 8)"
        )

    import docx

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx: PackageNotFoundError, KeyError, ValueError
        detail = " ".join(str(exc).split())[:200]
        return f"not a Word document ({type(exc).__name__}: {detail})"
    styles = {s.style_id: s.name or "" for s in document.styles if s.type == 1}
    out = TextBuilder()
    stack = [iter(document.element.body.iterchildren())]
    blocks = 0
    while stack:
        element = next(stack[-1], None)
        if element is None:
            stack.pop()
            continue
        blocks += 1
        if blocks % 256 == 0 and time.monotonic() > deadline:
            return timeout_reason(limits)
        tag = element.tag
        if tag == f"{_W}p":
            _paragraph(out, element, styles)
        elif tag == f"{_W}tbl":
            for row in element.iterchildren(f"{_W}tr"):
                cells = [_cell_text(cell) for cell in row.iterchildren(f"{_W}tc")]
                out.add(" | ".join(c for c in cells if c))
        elif tag == f"{_W}sdt":  # a content control: its content is ordinary blocks
            content = element.find(f"{_W}sdtContent")
            if content is not None:
                stack.append(iter(content.iterchildren()))
    props = document.core_properties
    return out.build(title=props.title or "", author=props.author or "")


def _paragraph(out: TextBuilder, p, styles: dict[str, str]) -> None:
    text = p.text
    name = styles.get(p.style or "", "").lower()
    level = _heading_level(p, name)
    if level is not None:
        out.add(text, heading_level=level)
    elif name.startswith("list") or _numbered(p):
        out.add(f"- {text}" if text.strip() else "")
    else:
        out.add(text)


def _heading_level(p, style_name: str) -> int | None:
    if style_name == "title":
        return 0
    if style_name.startswith("heading "):
        suffix = style_name.removeprefix("heading ")
        if suffix.isdigit():
            return int(suffix)
    ppr = p.pPr
    outline = ppr.find(f"{_W}outlineLvl") if ppr is not None else None
    if outline is not None:
        value = outline.get(f"{_W}val", "")
        if value.isdigit() and int(value) < 9:  # 9 means "body text"
            return int(value) + 1
    return None


def _numbered(p) -> bool:
    ppr = p.pPr
    return ppr is not None and ppr.find(f"{_W}numPr") is not None


def _cell_text(cell) -> str:
    """A cell's paragraphs (nested tables' included) on one line."""
    return " ".join(" ".join(p.text.split()) for p in cell.iter(f"{_W}p") if p.text.strip())
