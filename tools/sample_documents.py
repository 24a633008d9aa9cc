"""PDF and Word files made on the spot, for the reader tests and `bench/pdf_extract.py`.

Nothing is downloaded: a PDF is written object by object here (Helvetica, WinAnsi text,
optionally Flate-compressed content streams), then pypdf adds what a real file may carry
(metadata, an outline, encryption); a .docx is written by python-docx. Every file is
deterministic, so a test that reads it back knows exactly which text is on which page.
"""

from __future__ import annotations

import io
import textwrap
import zlib
from collections.abc import Sequence

# A 2x2 grey image: what a scanned page is to a text extractor (pixels, no text layer).
_IMAGE = b"\x00\x80\x80\xff"


def _escape(text: str) -> bytes:
    raw = text.encode("cp1252", "replace")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def _content(text: str, image: bool) -> bytes:
    if image:
        return b"q 400 0 0 500 100 150 cm /Im1 Do Q"
    lines = [seg for para in text.split("\n") for seg in (textwrap.wrap(para, 95) or [""])]
    ops = [b"BT /F1 10 Tf 12 TL 50 760 Td"]
    ops += [b"(" + _escape(line) + b") Tj T*" for line in lines]
    ops.append(b"ET")
    return b"\n".join(ops)


def raw_pdf(pages: Sequence[str], *, image_only: bool = False, compress: bool = True) -> bytes:
    """A PDF with one page per text (lines wrapped at 95 characters; "\\n" starts a line).

    `image_only`: every page is an image and nothing else, as a scan without OCR is.
    """
    objs: list[bytes] = []

    def add(body: bytes) -> int:
        objs.append(body)
        return len(objs)

    catalog = add(b"")  # filled in once the page tree exists
    pages_id = add(b"")
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    image = add(
        b"<< /Type /XObject /Subtype /Image /Width 2 /Height 2 /ColorSpace /DeviceGray "
        b"/BitsPerComponent 8 /Length 4 >>\nstream\n" + _IMAGE + b"\nendstream"
    )
    kids = []
    for text in pages:
        data = _content(text, image_only)
        head = b"<< /Length %d" % (len(data) if not compress else 0)
        if compress:
            data = zlib.compress(data)
            head = b"<< /Length %d /Filter /FlateDecode" % len(data)
        content = add(head + b" >>\nstream\n" + data + b"\nendstream")
        kids.append(
            add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                b"/Resources << /Font << /F1 %d 0 R >> /XObject << /Im1 %d 0 R >> >> >>"
                % (pages_id, content, font, image)
            )
        )
    objs[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages_id
    refs = b" ".join(b"%d 0 R" % k for k in kids)
    objs[pages_id - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (refs, len(kids))
    return _assemble(objs, root=catalog)


def _assemble(objs: list[bytes], root: int) -> bytes:
    out = io.BytesIO()
    out.write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, body in enumerate(objs, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % n + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    out.write(
        b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n"
        % (len(objs) + 1, root, xref)
    )
    return out.getvalue()


def pdf(
    pages: Sequence[str],
    *,
    title: str | None = None,
    author: str | None = None,
    outline: Sequence[tuple[str, int, int]] = (),
    user_password: str | None = None,
    image_only: bool = False,
) -> bytes:
    """`raw_pdf` plus metadata, an outline of (title, page index from 0, level from 1) in
    document order, and encryption (AES-128; `user_password=""` opens without one)."""
    from pypdf import PdfWriter

    writer = PdfWriter(clone_from=io.BytesIO(raw_pdf(pages, image_only=image_only)))
    meta = {k: v for k, v in (("/Title", title), ("/Author", author)) if v is not None}
    if meta:
        writer.add_metadata(meta)
    parents: list = []
    for heading, page, level in outline:
        del parents[level - 1 :]
        parent = parents[-1] if parents else None
        parents.append(writer.add_outline_item(heading, page, parent=parent))
    if user_password is not None:
        writer.encrypt(user_password, owner_password="owner-secret", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def nested_pdf(depth: int) -> bytes:
    """A page tree nested `depth` levels deep (a /Pages node in each /Kids): a PDF bomb
    for parsers that recurse per level."""
    objs: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    for level in range(depth):
        n = len(objs) + 1
        parent = b" /Parent %d 0 R" % (n - 1) if level else b""
        objs.append(b"<< /Type /Pages /Kids [%d 0 R] /Count 1%s >>" % (n + 1, parent))
    content = len(objs) + 2
    objs.append(
        b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Contents %d 0 R >>"
        % (len(objs), content)
    )
    data = b"BT /F1 10 Tf 50 760 Td (deep) Tj ET"
    objs.append(b"<< /Length %d >>\nstream\n" % len(data) + data + b"\nendstream")
    return _assemble(objs, root=1)


def docx(blocks: Sequence[tuple[str, object]], *, title: str = "", author: str = "") -> bytes:
    """A Word file of (kind, value) blocks in order: ("heading1".."heading9", text),
    ("title", text), ("p", text), ("bullet", text), ("number", text), ("table", rows)."""
    import docx as python_docx

    document = python_docx.Document()
    document.core_properties.title = title
    document.core_properties.author = author
    for kind, value in blocks:
        if kind == "title":
            document.add_heading(str(value), level=0)
        elif kind.startswith("heading"):
            document.add_heading(str(value), level=int(kind.removeprefix("heading")))
        elif kind == "p":
            document.add_paragraph(str(value))
        elif kind == "bullet":
            document.add_paragraph(str(value), style="List Bullet")
        elif kind == "number":
            document.add_paragraph(str(value), style="List Number")
        elif kind == "table":
            rows = list(value)  # type: ignore[call-overload]
            table = document.add_table(rows=len(rows), cols=len(rows[0]))
            for r, row in enumerate(rows):
                for c, cell in enumerate(row):
                    table.cell(r, c).text = str(cell)
        else:
            raise ValueError(f"unknown block kind {kind!r}")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def nested_array_pdf(depth: int) -> bytes:
    """One page whose resources hold an array nested `depth` deep: a bomb for a parser
    that recurses per bracket."""
    data = b"BT /F1 10 Tf 50 760 Td (deep) Tj ET"
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> /X " + b"[" * depth + b"]" * depth + b" >> >>",
        b"<< /Length %d >>\nstream\n" % len(data) + data + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    return _assemble(objs, root=1)


def stream_pdf(content: bytes) -> bytes:
    """One page with this (Flate-compressed) content stream and Helvetica as /F1: a page
    of millions of operators, or a stream that inflates to gigabytes."""
    data = zlib.compress(content, 9)
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(data) + data + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    return _assemble(objs, root=1)
