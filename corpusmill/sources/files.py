"""Sources: the built-in Python docs, a folder, one file, or an `s3://` prefix, read into
documents.

A folder is listed (sorted, hidden and partial files skipped), each file is checked
(inside the folder, a regular file, under the size limit), read once, and handed to the
reader of its format. Text formats are decoded here; PDF and Word files go to the
extractor worker under `ReadLimits` (`corpusmill.sources.isolation`). An `s3://` prefix is
listed and read by `corpusmill.sources.objects`, which hands each object's bytes to the
same `parse_file`.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from corpusmill.errors import ConfigError, InputError
from corpusmill.ids import display_name, doc_id_for
from corpusmill.sources.document import (
    FILE_REMOVED,
    Document,
    Extracted,
    Quarantined,
    make_document,
)
from corpusmill.sources.html import declared_charset, extract_html
from corpusmill.sources.isolation import ReadLimits, extract
from corpusmill.sources.records import RecordFields, jsonl_records, parquet_records

PYDOC = "pydoc"
TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst"}
HTML_SUFFIXES = {".html", ".htm"}
RECORD_SUFFIXES = {".jsonl", ".parquet"}
# Parsed by a library in the extractor worker: "module:function" per suffix.
EXTRACTORS = {
    ".pdf": "corpusmill.sources.pdf:extract_pdf",
    ".docx": "corpusmill.sources.word:extract_docx",
}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | RECORD_SUFFIXES | set(EXTRACTORS)
DEFAULT_MAX_FILE_BYTES = 20 * 1024 * 1024
DEFAULT_FIELDS = RecordFields()
DEFAULT_LIMITS = ReadLimits()

Item = Document | Quarantined


@dataclass(frozen=True)
class ReadOptions:
    """How sources are read, passed down whole: the record fields of .jsonl/.parquet, the
    size limit, the per-file limits of the parsed formats (PDF, Word), and the connection
    options of an object store (CORPUSMILL_STORAGE_OPTIONS, the store's own). An entry
    point makes it from its settings (`Settings.read_options`)."""

    fields: RecordFields = DEFAULT_FIELDS
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    limits: ReadLimits = DEFAULT_LIMITS
    storage_options: Mapping[str, str] = field(default_factory=dict)


DEFAULT_OPTIONS = ReadOptions()
OBJECT_SCHEMES = ("s3://",)


def is_object_uri(spec: str) -> bool:
    """An object-store prefix (`s3://bucket/prefix`), not a path."""
    return spec.startswith(OBJECT_SCHEMES)


def source_label(spec: str) -> str:
    """`pydoc` stays `pydoc`; a path becomes its absolute form, an `s3://` prefix itself
    (without a trailing slash): the label rows carry."""
    if spec == PYDOC:
        return spec
    if is_object_uri(spec):
        return spec.rstrip("/")
    return display_name(str(Path(spec).expanduser().resolve()))


def parse_source(entry: str) -> tuple[str, str]:
    """`pydoc`, `PATH`, or `LABEL=PATH` -> (spec, label).

    The label is what rows carry in their `source` column and what `--source` filters on;
    by default it is `pydoc` or the absolute path.
    """
    entry = entry.strip()
    if not entry:
        raise ConfigError("empty source entry (CORPUSMILL_SOURCES is a comma-separated list)")
    if "=" in entry and not entry.startswith(("/", ".", *OBJECT_SCHEMES)):
        label, spec = entry.split("=", 1)
        return spec, label
    return entry, source_label(entry)


def read_path(
    spec: str,
    wanted=lambda _id: True,
    *,
    label: str | None = None,
    options: ReadOptions = DEFAULT_OPTIONS,
    key: str | None = None,
) -> Iterator[Item]:
    """The documents of a folder or of one file (`read_source` for a path); `key`: one
    file's key (default its name). A path that does not exist raises FileNotFoundError
    before anything is yielded."""
    # abspath, not resolve: `../docs/a.txt` is an ordinary path, and a symlinked source
    # folder keeps its own name.
    root = Path(os.path.abspath(Path(spec).expanduser()))
    source = label or source_label(spec)
    if not root.exists():
        raise FileNotFoundError(f"source {spec!r} does not exist")
    if not (root.is_file() or root.is_dir()):
        raise InputError(f"source {spec!r} is not a regular file or a folder (a FIFO, a device?)")
    if root.is_file():
        yield from read_file(root, key or root.name, source, wanted, options)
        return
    for path, key in list_folder(root):
        if path.suffix.lower() in RECORD_SUFFIXES or wanted(doc_id_for(source, key)):
            yield from read_file(path, key, source, wanted, options, root=root)


def read_pydoc(wanted=lambda _id: True) -> Iterator[Document]:
    """The Python documentation topics that ship with every CPython: the demo corpus."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        doc = make_document(PYDOC, name, f"pydoc:{name}", name, topics[name].strip())
        if wanted(doc.doc_id):
            yield doc


def list_folder(root: Path) -> Iterator[tuple[Path, str]]:
    """(path, relative key) of candidate files, sorted, not following directory links.

    Hidden names and editor/partial-download leftovers are skipped: a file still being
    written as `.name.tmp` or `name.part` is picked up once it is renamed into place.
    """
    root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if is_candidate(name):
                path = Path(dirpath) / name
                yield path, path.relative_to(root).as_posix()


def is_candidate(key: str) -> bool:
    """Whether a file (or an object) under this relative key is read: a supported suffix,
    no hidden part, not an editor or partial-download leftover."""
    parts = PurePosixPath(key).parts
    if not parts or any(p.startswith(".") for p in parts):
        return False
    name = parts[-1]
    if name.endswith(("~", ".tmp", ".part", ".swp")):
        return False
    return PurePosixPath(name).suffix.lower() in SUPPORTED_SUFFIXES


def check_path(path: Path, root: Path | None) -> str | None:
    """Why a path may not be read, or None. Symlinks may point anywhere inside root."""
    if ".." in Path(path).parts:
        return "path contains '..'"
    if root is None:
        return None
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        return FILE_REMOVED
    except (OSError, RuntimeError) as exc:  # RuntimeError: symlink loop
        return f"cannot resolve path: {exc}"
    if not real.is_relative_to(root.resolve()):
        return f"symlink leads outside the source folder (to {real})"
    if not real.is_file():
        return "not a regular file"
    return None


def read_file(
    path: Path,
    key: str,
    source: str,
    wanted,
    options: ReadOptions = DEFAULT_OPTIONS,
    root: Path | None = None,
) -> Iterator[Item]:
    """The documents of one file (one, or one per record), or its quarantine records."""
    doc_id = doc_id_for(source, key)
    uri = display_name(str(path))  # a name that is not UTF-8 is kept, shown as `\xff`

    def bad(reason: str) -> Quarantined:
        return Quarantined(doc_id, source, uri, reason)

    problem = check_path(path, root)
    if problem:
        yield bad(problem)
        return
    try:
        size = path.stat().st_size
        if size > options.max_file_bytes:
            yield bad(too_large("file", size, options.max_file_bytes))
            return
        data = path.read_bytes()
    except FileNotFoundError:
        yield bad(FILE_REMOVED)
        return
    except OSError as exc:
        yield bad(f"cannot read file: {exc.strerror or exc}")
        return
    yield from parse_file(data, key, uri, source, wanted, options.fields, options.limits)


def too_large(what: str, size: int, limit: int) -> str:
    return f"{what} is {size} bytes, over the limit of {limit} (CORPUSMILL_MAX_FILE_BYTES)"


def parse_file(
    data: bytes,
    key: str,
    uri: str,
    source: str,
    wanted=lambda _id: True,
    fields: RecordFields = DEFAULT_FIELDS,
    limits: ReadLimits = DEFAULT_LIMITS,
) -> Iterator[Item]:
    """The documents in one file's bytes, by the suffix of its key, wherever the bytes
    came from (a folder; an object store reads an object and calls this too). A reader
    that fails in a way nobody foresaw quarantines this file, not the run."""
    try:
        yield from _parse(data, key, uri, source, wanted, fields, limits)
    except Exception as exc:  # noqa: BLE001 - one input's failure is that input's
        yield Quarantined(doc_id_for(source, key), source, uri, failure_reason("read", exc))


def failure_reason(what: str, exc: BaseException) -> str:
    """One line for an unforeseen failure of one input: `could not be read (Type: msg)`."""
    message = " ".join(str(exc).split())[:200]
    return f"could not be {what} ({type(exc).__name__}{': ' + message if message else ''})"


def _parse(
    data: bytes,
    key: str,
    uri: str,
    source: str,
    wanted,
    fields: RecordFields,
    limits: ReadLimits,
) -> Iterator[Item]:
    def bad(reason: str) -> Quarantined:
        return Quarantined(doc_id_for(source, key), source, uri, reason)

    suffix = PurePosixPath(key).suffix.lower()
    if suffix == ".parquet":
        yield from parquet_records(data, key, uri, source, wanted, fields, bad)
        return
    if suffix in EXTRACTORS:
        outcome: Extracted | str = extract(EXTRACTORS[suffix], data, limits)
    else:
        outcome = _decode(data, suffix)
        if isinstance(outcome, Extracted) and suffix == ".jsonl":
            yield from jsonl_records(outcome.text, key, uri, source, wanted, fields, bad)
            return
    if isinstance(outcome, str):
        yield bad(outcome)
    elif not outcome.text.strip():
        yield bad("empty or whitespace-only")
    else:
        yield make_document(
            source,
            key,
            uri,
            outcome.title,
            outcome.text.strip(),
            author=outcome.author,
            structure=outcome.structure,
        )


def _decode(data: bytes, suffix: str) -> Extracted | str:
    """A text format's bytes as text (HTML reduced to its rendered text), or why not."""
    encoding = declared_charset(data) if suffix in HTML_SUFFIXES else None
    text, reason = decode_text(data, fallback=encoding)
    if reason:
        return reason
    if suffix in HTML_SUFFIXES:
        return extract_html(text)
    return Extracted(text=text)


_BOMS = (  # UTF-32 first: its little-endian mark starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_text(data: bytes, fallback: str | None = None) -> tuple[str, str | None]:
    """(text, None) or ("", why not). A byte-order mark picks the encoding and is dropped
    (UTF-16 text is full of NUL bytes and is not binary); without one the text must be
    UTF-8, or in the `fallback` encoding a document declares (an HTML `<meta charset>`).
    A NUL anywhere in the text, not only near the start, marks it binary."""
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), "utf-8")
    if encoding == "utf-8" and b"\x00" in data:
        return "", "binary file (contains NUL bytes)"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        if encoding != "utf-8" or fallback in (None, "utf-8"):
            return "", f"invalid {encoding.removesuffix('-sig').upper()} at byte {exc.start}"
        try:
            text = data.decode(fallback)
        except UnicodeDecodeError as exc2:
            return "", f"invalid {fallback} (its declared charset) at byte {exc2.start}"
    if "\x00" in text:
        return "", "binary file (contains NUL characters)"
    return text.removeprefix("\ufeff"), None
