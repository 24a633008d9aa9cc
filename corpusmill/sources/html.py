"""HTML to text, parsed the way browsers parse it.

The tree comes from lexbor (through selectolax), which follows the WHATWG HTML parsing
rules: implied and omitted tags (`<head>` closed by `<body>` or by body content, `<p>` by
the next block, `<li>` by the next item, `<td>` without `<tr>`), so a page a browser shows
as text yields that text. From the tree we keep what a browser renders (no script, style,
template, `hidden` or `display:none` parts), minus navigation (`<nav>`, role=navigation);
when the page marks its main content (exactly one `<main>` or role=main), only that. The
`<title>` is the document's title, h1-h6 its sections.

Why not a boilerplate remover such as trafilatura: on real documentation pages it dropped
main content this keeps (whole sections on some pages: a chunk never embedded is an answer
never found) and ran several times slower (`bench/html_extract.py`, docs/BENCHMARKS.md).
"""

from __future__ import annotations

import codecs
import re

from corpusmill.sources.document import Extracted, TextBuilder

_SKIP = {
    "script", "style", "noscript", "template", "head", "title", "svg", "iframe", "object",
    "select", "button", "nav",
}  # fmt: skip
_BLOCK = {
    "address", "article", "aside", "blockquote", "br", "caption", "dd", "details", "dialog",
    "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "header",
    "hgroup", "hr", "legend", "li", "main", "menu", "ol", "p", "pre", "section", "summary",
    "table", "tbody", "tfoot", "thead", "tr", "ul",
}  # fmt: skip
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_CELLS = {"td", "th"}
_WS = re.compile(r"\s+")


def _hidden(node) -> bool:
    attrs = node.attributes
    if "hidden" in attrs or attrs.get("role") == "navigation":
        return True
    style = (attrs.get("style") or "").replace(" ", "").lower()
    return "display:none" in style or "visibility:hidden" in style


class _Walker:
    """Depth-first over the tree with an explicit stack (a page nested 100,000 deep must
    not hit Python's recursion limit), cutting the text into blocks."""

    def __init__(self) -> None:
        self.out = TextBuilder()
        self.inline: list[str] = []
        self.pre = 0

    def flush(self, heading: int | None = None) -> None:
        text = "".join(self.inline)
        self.inline = []
        if self.pre:
            lines = (line.rstrip() for line in text.split("\n"))
            text = "\n".join(line for line in lines if line.strip())
        self.out.add(text, heading)

    def walk(self, root) -> None:
        stack: list[tuple[object, bool]] = [(root, False)]
        while stack:
            node, closing = stack.pop()
            tag = node.tag  # type: ignore[attr-defined]
            if closing:
                self._close(tag)
                continue
            if tag == "-text":
                text = node.text_content or ""  # type: ignore[attr-defined]
                self.inline.append(text if self.pre else _WS.sub(" ", text))
                continue
            if tag.startswith("-") or tag in _SKIP or _hidden(node):
                continue
            self._open(tag)
            stack.append((node, True))
            kids = []
            child = node.child  # type: ignore[attr-defined]
            while child is not None:
                kids.append(child)
                child = child.next
            stack.extend((kid, False) for kid in reversed(kids))

    def _open(self, tag: str) -> None:
        if tag in _BLOCK or tag in _HEADINGS:
            self.flush()
        elif tag in _CELLS and "".join(self.inline).strip():
            self.inline.append(" | ")
        if tag == "pre":
            self.pre += 1

    def _close(self, tag: str) -> None:
        if tag in _HEADINGS:
            self.flush(_HEADINGS[tag])
        elif tag in _BLOCK:
            self.flush()
        if tag == "pre":
            self.pre -= 1


def extract_html(html: str) -> Extracted:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    title_node = tree.head.css_first("title") if tree.head is not None else None
    title = title_node.text() if title_node is not None else ""
    body = tree.body
    if body is None:
        return Extracted(text="", title=title)
    mains = [m for m in tree.css("main, [role=main]") if not _hidden(m)]
    roots = [mains[0], body] if len(mains) == 1 else [body]
    for root in roots:  # the marked main content, or everything when it has no text
        walker = _Walker()
        walker.walk(root)
        walker.flush()
        extracted = walker.out.build(title=title)
        if extracted.text:
            return extracted
    return extracted


def html_to_text(html: str) -> str:
    return extract_html(html).text


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_:.-]+)""", re.I)


def declared_charset(data: bytes) -> str | None:
    """The encoding a `<meta charset>` (or http-equiv content-type) names in the first
    1024 bytes, as browsers prescan for it; None if none or Python does not know it."""
    match = _META_CHARSET.search(data[:1024])
    if not match:
        return None
    try:
        return codecs.lookup(match.group(1).decode("ascii")).name
    except LookupError:
        return None
