"""BEIR data sets on disk: corpus.jsonl, queries.jsonl and qrels/<split>.tsv."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from corpusmill.errors import ConfigError


@dataclass(frozen=True)
class BeirSet:
    root: Path
    corpus_path: Path
    queries: dict[str, str]  # only the labelled queries of the split, in qrels order
    qrels: dict[str, dict[str, int]]


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV (header `query-id corpus-id score`, CRLF line ends) -> nested map."""
    qrels: dict[str, dict[str, int]] = {}
    with path.open(newline="", encoding="utf-8") as fh:  # csv strips the \r of CRLF
        reader = csv.reader(fh, delimiter="\t")
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["query-id", "corpus-id", "score"]:
            raise ConfigError(f"{path}: expected the BEIR header 'query-id corpus-id score'")
        for n, row in enumerate(reader, start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 3:
                raise ConfigError(f"{path}:{n}: expected 3 tab-separated columns, got {row!r}")
            qid, doc, score = (c.strip() for c in row[:3])
            qrels.setdefault(qid, {})[doc] = int(score)
    return qrels


def load_beir(root: str | Path, split: str = "test", limit_queries: int = 0) -> BeirSet:
    """The labelled queries of `split` and their judgements; the corpus is read by ingest."""
    root = Path(root).expanduser().resolve()
    corpus = root / "corpus.jsonl"
    queries_path = root / "queries.jsonl"
    qrels_path = root / "qrels" / f"{split}.tsv"
    missing = [p for p in (corpus, queries_path, qrels_path) if not p.is_file()]
    if missing:
        raise ConfigError(
            f"not a BEIR folder: missing {', '.join(map(str, missing))}. Pass --data or set "
            "CORPUSMILL_EVAL_DATA (default ../shared/eval/scifact)"
        )
    qrels = read_qrels(qrels_path)
    if limit_queries > 0:
        qrels = dict(list(qrels.items())[:limit_queries])
    texts: dict[str, str] = {}
    with queries_path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rec = json.loads(line)  # `metadata` holds SciFact's evidence: never used
                if str(rec["_id"]) in qrels:
                    texts[str(rec["_id"])] = rec["text"]
    lost = [q for q in qrels if q not in texts]
    if lost:
        raise ConfigError(f"{len(lost)} labelled queries missing from {queries_path}: {lost[:5]}")
    return BeirSet(root, corpus, {q: texts[q] for q in qrels}, qrels)
