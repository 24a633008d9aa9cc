"""Reading sources: every supported format, and bad input quarantined, never raised."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

from corpusmill.ids import parse_doc_id
from corpusmill.sources import Document, Quarantined, ReadOptions, html_to_text, read_source


def _key(doc_id: str) -> str:
    _source, key, record = parse_doc_id(doc_id)
    return key if record is None else record


def _read(path, wanted=lambda _id: True, **kw):
    items = list(read_source(str(path), wanted, options=ReadOptions(**kw)))
    # Keyed by a file's relative path, or a record's id (its file is in the doc id too).
    docs = {_key(d.doc_id): d for d in items if isinstance(d, Document)}
    bad = {q.uri: q.reason for q in items if isinstance(q, Quarantined)}
    return docs, bad


def test_pydoc_corpus_is_builtin():
    docs = [d for d in read_source("pydoc") if isinstance(d, Document)]
    assert len(docs) > 50
    assert any(d.doc_id == "pydoc#try" for d in docs)
    assert all(d.source == "pydoc" and d.text for d in docs)


def test_folder_formats(tmp_path):
    (tmp_path / "a.txt").write_text("plain text")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("# Title\n\nmarkdown body")
    (tmp_path / "c.html").write_text(
        "<html><head><title>x</title><script>var a=1;</script></head><body><p>Hello <b>web</b></p></body></html>"
    )
    (tmp_path / "d.jsonl").write_text(
        json.dumps({"_id": "r1", "title": "T1", "text": "first record"})
        + "\n"
        + json.dumps({"_id": "r2", "text": "second record"})
        + "\n"
    )
    pq.write_table(
        pa.table({"_id": ["p1"], "text": ["parquet record"], "title": ["PT"]}),
        tmp_path / "e.parquet",
    )
    (tmp_path / "ignored.bin").write_bytes(b"\x00\x01")
    docs, bad = _read(tmp_path)
    assert set(docs) == {"a.txt", "sub/b.md", "c.html", "r1", "r2", "p1"}
    assert docs["c.html"].text == "Hello web"
    assert docs["r1"].title == "T1" and docs["r1"].body == "T1\nfirst record"
    assert docs["p1"].text == "parquet record"
    assert bad == {}


def test_bad_files_are_quarantined_with_reasons(tmp_path):
    root = tmp_path / "inbox"
    root.mkdir()
    (root / "good.txt").write_text("fine")
    (root / "binary.txt").write_bytes(b"abc\x00def")
    (root / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (root / "empty.md").write_text("   \n\t ")
    (root / "big.txt").write_text("x" * 5000)
    (root / "broken.jsonl").write_text('{"_id": "ok", "text": "fine"}\n{not json\n{"_id": "x"}\n')
    outside = tmp_path / "secret.txt"
    outside.write_text("outside the inbox")
    os.symlink(outside, root / "link.txt")
    os.symlink(root / "good.txt", root / "inside-link.txt")
    docs, bad = _read(root, max_file_bytes=1000)
    assert set(docs) == {"good.txt", "ok", "inside-link.txt"}
    reasons = {os.path.basename(k): v for k, v in bad.items()}
    assert "NUL" in reasons["binary.txt"]
    assert "UTF-8" in reasons["latin1.txt"]
    assert "empty" in reasons["empty.md"]
    assert "over the limit" in reasons["big.txt"]
    assert "outside" in reasons["link.txt"]
    assert "invalid JSON" in reasons["broken.jsonl:2"]
    assert "no text" in reasons["broken.jsonl:3"]
    assert all("secret" not in d.text for d in docs.values())


def test_hidden_and_partial_files_are_skipped(tmp_path):
    (tmp_path / ".hidden.txt").write_text("no")
    (tmp_path / "draft.txt.part").write_text("no")
    (tmp_path / "real.txt").write_text("yes")
    docs, _ = _read(tmp_path)
    assert set(docs) == {"real.txt"}


def test_wanted_filter_skips_other_shards(tmp_path):
    for i in range(10):
        (tmp_path / f"f{i}.txt").write_text(f"file {i}")
    docs, _ = _read(tmp_path, wanted=lambda doc_id: doc_id.endswith("f3.txt"))
    assert set(docs) == {"f3.txt"}


def test_html_to_text_keeps_blocks():
    assert html_to_text("<div>a</div><div>b &amp; c</div>") == "a\nb & c"
