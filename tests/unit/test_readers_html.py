"""HTML parsed the way browsers parse it: implied and omitted tags, what is rendered, the
title, headings as sections, a declared charset (issue 27, item 4; issue 24, item 3)."""

from __future__ import annotations

import pytest

from corpusmill.sources import Document, extract_html, html_to_text, read_source

ISSUE_27 = (
    "<!DOCTYPE html><html><head><meta charset=utf-8><title>Doc</title>"
    "<body><p>Body text</p></body></html>"
)


def test_a_head_closed_by_body_keeps_the_body(tmp_path):
    """`</head>` may be omitted: the old extractor skipped everything after `<head>`."""
    (tmp_path / "a.html").write_text(ISSUE_27)
    (doc,) = read_source(str(tmp_path), label="t")
    assert isinstance(doc, Document)
    assert (doc.title, doc.text) == ("Doc", "Body text")


@pytest.mark.parametrize(
    ("html", "text"),
    [
        # No <html>, <head> or <body> at all: body content implies them.
        ("<title>T</title>Loose text", "Loose text"),
        # A <p> is closed by the next block; <li> by the next <li>.
        ("<p>one<p>two<ul><li>a<li>b</ul>", "one\ntwo\na\nb"),
        # Cells without <tr>/<tbody>: the parser adds them; a row is one line.
        ("<table><td>x<td>y<tr><td>z</table>", "x | y\nz"),
        # Text after </body> and </html> still belongs to the body.
        ("<html><body><p>in</p></body></html><p>after</p>", "in\nafter"),
        # A <head> left open is closed by body content, not by </head>.
        ("<html><head><title>T</title><meta x=1><div>shown</div>", "shown"),
        # Character references, including ones without a semicolon.
        ("<p>a &amp; b &lt c &copy 2024</p>", "a & b < c \u00a9 2024"),
        # Whitespace collapses outside <pre>; <pre> keeps its lines.
        ("<p>  many\n   spaces </p><pre>line 1\n  line 2</pre>", "many spaces\nline 1\n  line 2"),
    ],
)
def test_omitted_and_implied_tags_follow_the_html5_rules(html, text):
    assert html_to_text(html) == text


def test_only_what_a_browser_renders_and_no_navigation():
    html = (
        "<body><nav><a>Home</a><a>About</a></nav>"
        "<div role=navigation>Menu</div>"
        "<script>var hidden = 1;</script><style>p{}</style><template>tpl</template>"
        "<p hidden>not shown</p><p style='display: none'>nor this</p>"
        "<p>Visible paragraph.</p></body>"
    )
    assert html_to_text(html) == "Visible paragraph."


def test_the_main_content_when_the_page_marks_it():
    html = (
        "<header>Site banner</header><aside>Ads</aside>"
        "<main><h1>Article</h1><p>The story.</p><aside>A footnote.</aside></main>"
        "<footer>Copyright</footer>"
    )
    assert html_to_text(html) == "Article\nThe story.\nA footnote."
    # Two <main>s (invalid) or an empty one: the whole page rather than a guess.
    assert "Site banner" in html_to_text("<p>Site banner</p><main></main>")


def test_headings_are_sections():
    extracted = extract_html(
        "<title>Guide</title><h1>Install</h1><p>pip it.</p><h2>On Linux</h2><p>apt.</p>"
        "<h1>Use</h1><p>run it.</p>"
    )
    assert extracted.title == "Guide"
    assert [(s.title, s.level) for s in extracted.structure.sections] == [
        ("Install", 1),
        ("On Linux", 2),
        ("Use", 1),
    ]
    path = extracted.structure.section_path
    assert path(extracted.text.index("apt.")) == ("Install", "On Linux")
    assert path(extracted.text.index("run it")) == ("Use",)


def test_a_declared_charset_is_honoured(tmp_path):
    html = (
        '<html><head><meta charset="windows-1252"><title>Caf\u00e9</title></head><p>na\u00efve</p>'
    )
    (tmp_path / "a.html").write_bytes(html.encode("cp1252"))
    (doc,) = read_source(str(tmp_path), label="t")
    assert isinstance(doc, Document)
    assert (doc.title, doc.text) == ("Caf\u00e9", "na\u00efve")


def test_deep_nesting_does_not_hit_the_recursion_limit():
    html = "<div>" * 50_000 + "deep text" + "</div>" * 50_000
    assert html_to_text(html) == "deep text"
