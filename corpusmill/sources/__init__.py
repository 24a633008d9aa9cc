"""Read documents from a source: the built-in Python docs, a folder, or one file.

Every reader yields `Document`s and `Quarantined` records; a bad file never raises. The
caller passes `wanted(doc_id)` so a partition reads only the files of its own shard (for a
folder the id comes from the path, so other shards' files are never opened).

Supported files: .txt .md .rst (as text), .html/.htm (parsed as browsers do, reduced to
the text they show), .pdf (pypdf, page by page), .docx (python-docx), .jsonl (one
document per line, configurable id/title/text fields), .parquet (same fields). PDF and
Word files are parsed in a worker process under per-file limits (`ReadLimits`). Sources:
`pydoc`, a folder or file, or an `s3://bucket/prefix`.

One module per concern: `document` (what a reader yields, and a document's pages and
sections), `files` (folders, files, dispatch by suffix, `ReadOptions`), `objects`
(`s3://` prefixes), `reading` (a source of any kind), `html`, `pdf`, `word`, `records`
(.jsonl/.parquet), `isolation` (the limits and the worker).
"""

from corpusmill.sources.document import (
    FILE_REMOVED,
    LAYOUT_VERSION,
    OBJECT_REMOVED,
    TRANSIENT_REASONS,
    Document,
    Extracted,
    Location,
    Quarantined,
    Section,
    SetAside,
    Structure,
    Unchanged,
    body_offset,
    document_body,
    locate,
    make_document,
)
from corpusmill.sources.files import (
    DEFAULT_MAX_FILE_BYTES,
    PYDOC,
    SUPPORTED_SUFFIXES,
    Item,
    ReadOptions,
    check_path,
    decode_text,
    is_candidate,
    is_object_uri,
    list_folder,
    parse_file,
    parse_source,
    read_file,
    read_path,
    read_pydoc,
    source_label,
)
from corpusmill.sources.html import extract_html, html_to_text
from corpusmill.sources.isolation import (
    DEFAULT_EXTRACT_MEMORY_MB,
    DEFAULT_EXTRACT_TIMEOUT_S,
    DEFAULT_MAX_PAGES,
    ReadLimits,
)
from corpusmill.sources.reading import read_source
from corpusmill.sources.records import RecordFields

__all__ = [
    "FILE_REMOVED",
    "LAYOUT_VERSION",
    "OBJECT_REMOVED",
    "TRANSIENT_REASONS",
    "DEFAULT_EXTRACT_MEMORY_MB",
    "DEFAULT_EXTRACT_TIMEOUT_S",
    "DEFAULT_MAX_FILE_BYTES",
    "DEFAULT_MAX_PAGES",
    "PYDOC",
    "SUPPORTED_SUFFIXES",
    "Document",
    "Extracted",
    "Item",
    "Location",
    "Quarantined",
    "ReadLimits",
    "ReadOptions",
    "RecordFields",
    "Section",
    "SetAside",
    "Structure",
    "Unchanged",
    "body_offset",
    "check_path",
    "decode_text",
    "document_body",
    "extract_html",
    "html_to_text",
    "is_candidate",
    "is_object_uri",
    "list_folder",
    "locate",
    "make_document",
    "parse_file",
    "parse_source",
    "read_file",
    "read_path",
    "read_pydoc",
    "read_source",
    "source_label",
]
