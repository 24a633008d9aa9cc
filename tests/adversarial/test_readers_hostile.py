"""Hostile PDF and Word files: each is quarantined with a one-line reason and the rest of
the source is read (issue 24, item 5). The worker's limits are tested with extractors
that hang, hoard memory, crash or recurse, run in the real worker process."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from corpusmill.sources import (
    Document,
    Quarantined,
    ReadLimits,
    ReadOptions,
    read_file,
    read_source,
)
from corpusmill.sources.files import list_folder
from corpusmill.sources.isolation import Worker, extract
from tools.sample_documents import docx, nested_array_pdf, nested_pdf, pdf, stream_pdf

FAULTS = "tests.adversarial.faulty_extractors"


def _zip_bomb() -> bytes:
    """A .docx whose document part inflates to 300 MB of spaces (300 KB on disk), past the
    256 MB that the default memory limit allows."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        with z.open("word/document.xml", "w", force_zip64=True) as part:
            block = b" " * 2**20
            for _ in range(300):
                part.write(block)
    return buf.getvalue()


def _hostile_files() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, a phrase its quarantine reason must contain)."""
    good = pdf(["A good page."])
    return {
        "truncated.pdf": (good[: len(good) // 2], "unreadable PDF"),
        "garbage.pdf": (b"%PDF-1.7\n" + bytes(range(256)) * 40, "PDF"),
        "not-a-pdf.pdf": (b"<html>a web page saved as .pdf</html>", "not a PDF"),
        "empty.pdf": (b"", "empty"),
        "locked.pdf": (pdf(["secret"], user_password="pw"), "password"),
        "many-pages.pdf": (pdf(["p"] * 60), "over the limit of 50"),
        "deep-page-tree.pdf": (nested_pdf(5_000), "PDF"),
        "inflates-to-100MB.pdf": (stream_pdf(b" " * 100_000_000), "Limit reached"),
        "zip-bomb.docx": (_zip_bomb(), "unpacks to 300 MB"),
        "zip-of-images.docx": (
            _zip_of({"a.png": b"\x89PNG" + b"\x00" * 64}),
            "not a Word document",
        ),
    }


def _zip_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


LIMITS = ReadLimits(max_pages=50, timeout_s=60)


def test_each_hostile_file_is_quarantined_and_the_rest_is_read(tmp_path):
    hostile = _hostile_files()
    for name, (data, _) in hostile.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "good.pdf").write_bytes(pdf(["Good PDF text."]))
    (tmp_path / "good.docx").write_bytes(docx([("p", "Good Word text.")]))
    (tmp_path / "good.txt").write_text("Good plain text.")
    items = list(read_source(str(tmp_path), label="t", options=ReadOptions(limits=LIMITS)))
    docs = {Path(i.uri).name: i for i in items if isinstance(i, Document)}
    bad = {Path(i.uri).name: i.reason for i in items if isinstance(i, Quarantined)}
    assert set(docs) == {"good.pdf", "good.docx", "good.txt"}
    assert set(bad) == set(hostile)
    for name, (_, phrase) in hostile.items():
        assert phrase in bad[name], (name, bad[name])
        assert "\n" not in bad[name] and len(bad[name]) < 400


def test_a_deeply_nested_object_is_read_or_quarantined_never_raised(tmp_path):
    for isolate in (True, False):
        (tmp_path / "nested.pdf").write_bytes(nested_array_pdf(200_000))
        (item,) = read_source(
            str(tmp_path), label="t", options=ReadOptions(limits=ReadLimits(isolate=isolate))
        )
        assert isinstance(item, Document | Quarantined)


def test_a_file_removed_between_listing_and_reading_is_quarantined(tmp_path):
    (tmp_path / "gone.pdf").write_bytes(pdf(["soon gone"]))
    ((path, key),) = list(list_folder(tmp_path))
    path.unlink()
    (item,) = read_file(path, key, "t", lambda _id: True, ReadOptions(), root=tmp_path)
    assert isinstance(item, Quarantined) and "removed between listing and reading" in item.reason


def test_a_page_that_never_finishes_is_stopped_and_the_worker_replaced():
    """One page of millions of text operators: no check between pages can stop it, the
    hard limit does; the next file gets a fresh worker."""
    slow = stream_pdf(b"BT /F1 10 Tf 50 760 Td " + b"(ab) Tj " * 5_000_000 + b"ET")
    worker = Worker(ReadLimits().memory_mb)
    limits = ReadLimits(timeout_s=0.5)
    try:
        reason = worker.run("corpusmill.sources.pdf:extract_pdf", slow, limits)
        assert isinstance(reason, str) and "longer than 0.5 s" in reason
        assert "CORPUSMILL_EXTRACT_TIMEOUT" in reason
        after = worker.run(f"{FAULTS}:echo", b"next file", ReadLimits(timeout_s=120))
        assert getattr(after, "text", None) == "next file" and worker.started == 2
    finally:
        worker.stop()


@pytest.mark.parametrize(
    ("fault", "phrase"),
    [
        ("hang", "longer than 0.3 s"),
        ("allocate", "ran out of memory"),
        ("crash", "crashed (SIGSEGV)"),
        ("recurse", "nested too deeply"),
    ],
)
def test_a_misbehaving_extractor_costs_one_file(fault, phrase):
    worker = Worker(memory_mb=512)
    # Only the hang meets the short time limit: under load on a shared machine the other
    # faults, and the replacement worker's start, must not race it.
    roomy = ReadLimits(timeout_s=120, memory_mb=512)
    limits = ReadLimits(timeout_s=0.3, memory_mb=512) if fault == "hang" else roomy
    try:
        reason = worker.run(f"{FAULTS}:{fault}", b"", limits)
        assert isinstance(reason, str) and phrase in reason
        after = worker.run(f"{FAULTS}:echo", b"still here", roomy)
        assert getattr(after, "text", None) == "still here"
    finally:
        worker.stop()


def test_the_shared_worker_serves_many_files_with_one_process():
    limits = ReadLimits()
    for i in range(20):
        out = extract(f"{FAULTS}:echo", f"file {i}".encode(), limits)
        assert getattr(out, "text", None) == f"file {i}"
    from corpusmill.sources.isolation import _worker

    assert _worker(limits.memory_mb).started == 1


@pytest.mark.slow
def test_a_2000_page_pdf_is_read_in_bounded_memory(tmp_path):
    """Peak RSS (VmHWM) of a fresh process reading a 2,000-page PDF inline, as the worker
    does: 72 MB against 35 MB for 20 pages on the 2-core CI machine (bench/pdf_extract.py)."""
    path = tmp_path / "book.pdf"
    path.write_bytes(pdf([f"Page {i + 1}. " + "words on a page " * 150 for i in range(2000)]))
    script = textwrap.dedent(
        f"""
        from corpusmill.sources import ReadLimits, ReadOptions, read_source
        (doc,) = read_source({str(path)!r}, options=ReadOptions(limits=ReadLimits(isolate=False)))
        assert len(doc.structure.pages) == 2000, doc
        assert doc.structure.pages_of(doc.text.index("Page 2000."), len(doc.text)) == (2000, 2000)
        print(int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) // 1024)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert int(out.stdout.split()[-1]) < 300


def test_a_forked_process_starts_its_own_worker_instead_of_sharing_the_pipes():
    limits = ReadLimits()
    assert getattr(extract(f"{FAULTS}:echo", b"parent", limits), "text", None) == "parent"
    pid = os.fork()
    if pid == 0:  # the child must be answered by a worker of its own
        out = extract(f"{FAULTS}:parent", b"", limits)
        os._exit(0 if getattr(out, "text", None) == str(os.getpid()) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert getattr(extract(f"{FAULTS}:echo", b"again", limits), "text", None) == "again"
