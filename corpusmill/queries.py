"""Query sets for the rerank scores asset: a JSONL file of `{"id": ..., "text": ...}`.

With no file configured (CORPUSMILL_QUERIES empty) the built-in set for the default
corpus, the Python docs, is used, so `make demo` produces rerank scores too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from corpusmill.errors import ConfigError
from corpusmill.ids import content_hash

DEFAULT_QUERIES = "default_queries.jsonl"


@dataclass(frozen=True)
class Query:
    id: str
    text: str

    @property
    def hash(self) -> str:
        """Identity of the query *text*: an edited query is rescored, an unchanged one not."""
        return content_hash("query", self.text)


def parse_queries(lines: list[str], origin: str) -> list[Query]:
    """Validate every line; a bad file fails with its line number, it is never half-read."""
    queries: list[Query] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{origin}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise ConfigError(f'{where}: expected an object like {{"id": "q1", "text": "..."}}')
        qid, text = record.get("id"), record.get("text")
        if qid is None or not str(qid).strip():
            raise ConfigError(f'{where}: missing "id"')
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f'{where}: missing or empty "text"')
        qid = str(qid)
        if qid in seen:
            raise ConfigError(f"{where}: duplicate query id {qid!r}")
        seen.add(qid)
        queries.append(Query(qid, text.strip()))
    if not queries:
        raise ConfigError(f"{origin}: no queries")
    return queries


def load_queries(path: str | Path | None = None) -> list[Query]:
    """Queries from `path`, or the built-in Python-docs set when `path` is empty."""
    if not path:
        text = resources.files("corpusmill").joinpath("data", DEFAULT_QUERIES).read_text("utf-8")
        return parse_queries(text.splitlines(), f"corpusmill/data/{DEFAULT_QUERIES}")
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(
            f"query file {str(file)!r} does not exist; set CORPUSMILL_QUERIES to a JSONL file "
            'of {"id", "text"} records, or leave it empty for the built-in queries'
        )
    return parse_queries(file.read_text("utf-8").splitlines(), str(file))
