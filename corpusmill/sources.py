"""Read documents from a source: the built-in Python docs, a folder, or one file.

Every reader yields `Document`s and `Quarantined` records; a bad file never raises. The
caller passes `wanted(doc_id)` so a partition reads only the files of its own shard (for a
folder the id comes from the path, so other shards' files are never opened).

Supported files: .txt .md .rst (as text), .html/.htm (reduced to text), .jsonl (one
document per line, configurable id/title/text fields), .parquet (same fields).
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from corpusmill.errors import ConfigError, InputError
from corpusmill.ids import content_hash, doc_id_for, escape_part, parse_doc_id, record_id_for

PYDOC = "pydoc"
TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst"}
HTML_SUFFIXES = {".html", ".htm"}
RECORD_SUFFIXES = {".jsonl", ".parquet"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | RECORD_SUFFIXES
DEFAULT_MAX_FILE_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class Document:
    doc_id: str
    source: str
    uri: str
    title: str
    text: str
    content_hash: str

    @property
    def body(self) -> str:
        return document_body(self.title, self.text)


def document_body(title: str, text: str) -> str:
    """What gets chunked and embedded: title, then text (MTEB encodes BEIR documents the
    same way, with a space; the tokenizer treats both alike)."""
    return f"{title}\n{text}".strip() if title else text


@dataclass(frozen=True)
class Quarantined:
    doc_id: str  # the id the document would have had; its stored rows are kept
    source: str
    uri: str
    reason: str


@dataclass(frozen=True)
class RecordFields:
    """Field names for .jsonl/.parquet sources (BEIR uses `_id`, `title`, `text`)."""

    id: str = "_id"
    text: str = "text"
    title: str = "title"


Wanted = Callable[[str], bool]
Item = Document | Quarantined


def make_document(
    source: str, key: str, uri: str, title: str, text: str, record: str | None = None
) -> Document:
    """A file's (or pydoc topic's) document, or with `record` one record of a file."""
    return Document(
        doc_id=doc_id_for(source, key) if record is None else record_id_for(source, key, record),
        source=source,
        uri=uri,
        title=title,
        text=text,
        content_hash=content_hash(title, text),
    )


def source_label(spec: str) -> str:
    """`pydoc` stays `pydoc`; a path becomes its absolute form, the label rows carry."""
    return spec if spec == PYDOC else str(Path(spec).expanduser().resolve())


def parse_source(entry: str) -> tuple[str, str]:
    """`pydoc`, `PATH`, or `LABEL=PATH` -> (spec, label).

    The label is what rows carry in their `source` column and what `--source` filters on;
    by default it is `pydoc` or the absolute path.
    """
    entry = entry.strip()
    if not entry:
        raise ConfigError("empty source entry (CORPUSMILL_SOURCES is a comma-separated list)")
    if "=" in entry and not entry.startswith(("/", ".")):
        label, spec = entry.split("=", 1)
        return spec, label
    return entry, source_label(entry)


def read_source(
    spec: str,
    wanted: Wanted = lambda _id: True,
    *,
    label: str | None = None,
    fields: RecordFields = RecordFields(),
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> Iterator[Item]:
    """All documents of one source. `label` overrides the source name (e.g. `inbox`)."""
    if spec == PYDOC:
        yield from read_pydoc(wanted)
        return
    # abspath, not resolve: `../docs/a.txt` is an ordinary path, and a symlinked source
    # folder keeps its own name.
    root = Path(os.path.abspath(Path(spec).expanduser()))
    source = label or source_label(spec)
    if not root.exists():
        raise FileNotFoundError(f"source {spec!r} does not exist")
    if not (root.is_file() or root.is_dir()):
        raise InputError(f"source {spec!r} is not a regular file or a folder (a FIFO, a device?)")
    if root.is_file():
        yield from read_file(root, root.name, source, wanted, fields, max_file_bytes)
        return
    yield from read_folder(root, source, wanted, fields, max_file_bytes)


def read_pydoc(wanted: Wanted) -> Iterator[Document]:
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
            if name.startswith(".") or name.endswith(("~", ".tmp", ".part", ".swp")):
                continue
            path = Path(dirpath) / name
            if path.suffix.lower() not in SUPPORTED_SUFFIXES:
                continue
            yield path, path.relative_to(root).as_posix()


def read_folder(
    root: Path, source: str, wanted: Wanted, fields: RecordFields, max_file_bytes: int
) -> Iterator[Item]:
    for path, key in list_folder(root):
        if path.suffix.lower() in RECORD_SUFFIXES or wanted(doc_id_for(source, key)):
            yield from read_file(path, key, source, wanted, fields, max_file_bytes, root=root)


def check_path(path: Path, root: Path | None) -> str | None:
    """Why a path may not be read, or None. Symlinks may point anywhere inside root."""
    if ".." in Path(path).parts:
        return "path contains '..'"
    if root is None:
        return None
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        return "file was removed between listing and reading"
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
    wanted: Wanted,
    fields: RecordFields,
    max_file_bytes: int,
    root: Path | None = None,
) -> Iterator[Item]:
    doc_id = doc_id_for(source, key)
    uri = str(path)

    def bad(reason: str) -> Quarantined:
        return Quarantined(doc_id, source, uri, reason)

    problem = check_path(path, root)
    if problem:
        yield bad(problem)
        return
    suffix = path.suffix.lower()
    try:
        size = path.stat().st_size
        if size > max_file_bytes:
            yield bad(
                f"file is {size} bytes, over the limit of {max_file_bytes} (CORPUSMILL_MAX_FILE_BYTES)"
            )
            return
        data = path.read_bytes()
    except FileNotFoundError:
        yield bad("file was removed between listing and reading")
        return
    except OSError as exc:
        yield bad(f"cannot read file: {exc.strerror or exc}")
        return

    if suffix == ".parquet":
        yield from _parquet_records(path, key, source, wanted, fields, bad)
        return
    text, reason = decode_text(data)
    if reason:
        yield bad(reason)
        return
    if suffix == ".jsonl":
        yield from _jsonl_records(text, key, uri, source, wanted, fields, bad)
        return
    if suffix in HTML_SUFFIXES:
        text = html_to_text(text)
    if not text.strip():
        yield bad("empty or whitespace-only")
        return
    yield make_document(source, key, uri, "", text.strip())


_BOMS = (  # UTF-32 first: its little-endian mark starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_text(data: bytes) -> tuple[str, str | None]:
    """(text, None) or ("", why not). A byte-order mark picks the encoding and is dropped
    (UTF-16 text is full of NUL bytes and is not binary); without one the text must be
    UTF-8. A NUL anywhere in the text, not only near the start, marks it binary."""
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), "utf-8")
    if encoding == "utf-8" and b"\x00" in data:
        return "", "binary file (contains NUL bytes)"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        return "", f"invalid {encoding.removesuffix('-sig').upper()} at byte {exc.start}"
    if "\x00" in text:
        return "", "binary file (contains NUL characters)"
    return text.removeprefix("\ufeff"), None


def _record(
    rec: dict, n: int, key: str, uri: str, source: str, fields: RecordFields
) -> Document | str:
    if not isinstance(rec, dict):
        return f"record {n} is not an object"
    rid = rec.get(fields.id, rec.get("id"))
    text = rec.get(fields.text)
    if rid is None or str(rid) == "":
        return f"record {n} has no '{fields.id}' field"
    if not isinstance(text, str) or not text.strip():
        return f"record {n} has no text in '{fields.text}'"
    title = rec.get(fields.title) or ""
    rid = str(rid)
    return make_document(
        source, key, f"{uri}#{escape_part(rid)}", str(title).strip(), text.strip(), record=rid
    )


def _records(rows: Iterable[tuple[int, object]], key, uri, source, wanted, fields, bad):
    """Documents of a record file's (line number, parsed record or error) pairs.

    A record id seen twice in one file keeps its first record; every later one is
    quarantined with the line that holds the kept one, never dropped without a word.
    """
    first: dict[str, int] = {}
    file_id = bad("").doc_id
    for n, rec in rows:
        result = rec if isinstance(rec, str) else _record(rec, n, key, uri, source, fields)  # type: ignore[arg-type]
        if isinstance(result, str):
            yield Quarantined(f"{file_id}:{n}", source, f"{uri}:{n}", result)
            continue
        if result.doc_id in first:
            rid = parse_doc_id(result.doc_id)[2]
            yield Quarantined(
                result.doc_id,
                source,
                f"{uri}:{n}",
                f"duplicate record id {rid!r}: record {first[result.doc_id]} has it too "
                "and is the one kept",
            )
            continue
        first[result.doc_id] = n
        if wanted(result.doc_id):
            yield result


def _jsonl_records(text, key, uri, source, wanted, fields, bad) -> Iterator[Item]:
    def rows():
        # "\n" only: str.splitlines also splits at U+2028 and other characters JSON
        # strings may hold raw, which cut one record in two.
        for n, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as exc:
                yield n, f"line {n}: invalid JSON ({exc.msg})"
            except RecursionError:  # deeply nested brackets: json recurses per level
                yield n, f"line {n}: invalid JSON (nested too deeply)"

    yield from _records(rows(), key, uri, source, wanted, fields, bad)


def _parquet_records(path, key, source, wanted, fields, bad) -> Iterator[Item]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        yield bad(f"unreadable parquet: {exc}")
        return
    rows = enumerate(table.to_pylist(), start=1)
    yield from _records(rows, key, str(path), source, wanted, fields, bad)


class _TextExtractor(HTMLParser):
    _SKIP = {"script", "style", "head", "noscript", "template"}
    _BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "section"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in self._SKIP:
            self.skip += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self._SKIP and self.skip:
            self.skip -= 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)
