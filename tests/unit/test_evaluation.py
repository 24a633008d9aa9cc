"""The retrieval evaluation: metrics against hand-computed cases, the BEIR loader on a
tiny folder with CRLF qrels, and one small end-to-end eval through ingest and search."""

from __future__ import annotations

import json
import math
from argparse import Namespace
from pathlib import Path

import pytest

from app.evaluation import main, run_eval
from corpusmill.config import Settings
from corpusmill.errors import ConfigError
from corpusmill.evaluation.beir import load_beir, read_qrels
from corpusmill.evaluation.metrics import mean_metrics, ndcg_at_k, recall_at_k, trec_order
from corpusmill.evaluation.retrieval import doc_run
from corpusmill.search import Hit

LOG2_3 = math.log2(3)


# -- metrics ---------------------------------------------------------------------------
def test_ndcg_perfect_and_empty():
    assert ndcg_at_k({"a": 0.9, "b": 0.1}, {"a": 1}) == 1.0
    assert ndcg_at_k({}, {"a": 1}) == 0.0
    assert ndcg_at_k({"x": 1.0}, {"a": 1}) == 0.0
    assert ndcg_at_k({"a": 1.0}, {}) == 0.0  # nothing relevant: 0, not a division by zero


def test_ndcg_hand_computed():
    # relevant a, b; ranked b (rank 1), x, a (rank 3): DCG = 1 + 1/log2(4) = 1.5
    # ideal: two relevant at ranks 1, 2: 1 + 1/log2(3)
    run = {"b": 0.9, "x": 0.8, "a": 0.7}
    assert ndcg_at_k(run, {"a": 1, "b": 1}) == pytest.approx(1.5 / (1 + 1 / LOG2_3))
    # one relevant doc at rank 2: 1/log2(3)
    assert ndcg_at_k({"x": 0.9, "a": 0.5}, {"a": 1}) == pytest.approx(1 / LOG2_3)


def test_ndcg_cut_at_k_and_ideal_from_qrels():
    run = {f"d{i:02d}": 100 - i for i in range(20)}  # d00 best ... d19 worst
    # relevant at rank 11 only: outside the cut
    assert ndcg_at_k(run, {"d10": 1}) == 0.0
    assert ndcg_at_k(run, {"d10": 1}, k=11) == pytest.approx(1 / math.log2(12))
    # ideal DCG counts relevant docs the run never retrieved: a and d00 judged, only d00 found
    assert ndcg_at_k(run, {"d00": 1, "zz": 1}) == pytest.approx(1 / (1 + 1 / LOG2_3))


def test_graded_gains_and_negative_judgements():
    # trec_eval uses the relevance level as the gain; negative levels count as 0
    run = {"a": 3.0, "b": 2.0}
    expected = (1 + 2 / LOG2_3) / (2 + 1 / LOG2_3)
    assert ndcg_at_k(run, {"a": 1, "b": 2}) == pytest.approx(expected)
    assert ndcg_at_k({"a": 1.0, "n": 2.0}, {"a": 1, "n": -1}) == pytest.approx(1 / LOG2_3)


def test_ties_are_broken_by_doc_id_descending_as_trec_eval_does():
    assert trec_order({"a": 1.0, "c": 1.0, "b": 2.0}) == ["b", "c", "a"]
    # relevant "a" ties with "c": trec_eval puts "c" first, so "a" is at rank 2
    assert ndcg_at_k({"a": 1.0, "c": 1.0}, {"a": 1}) == pytest.approx(1 / LOG2_3)


def test_recall_at_k():
    run = {f"d{i:03d}": 1000 - i for i in range(150)}
    assert recall_at_k(run, {"d000": 1, "d099": 1}) == 1.0
    assert recall_at_k(run, {"d000": 1, "d100": 1}) == 0.5  # rank 101 is outside
    assert recall_at_k(run, {"d000": 1, "zzz": 1, "yyy": 0}) == 0.5  # score 0: not relevant
    assert recall_at_k(run, {"d000": 1, "d005": 1}, k=3) == 0.5


def test_mean_counts_queries_without_results_as_zero():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    means = mean_metrics({"q1": {"a": 1.0}}, qrels)
    assert means["ndcg@10"] == 0.5
    assert means["recall@100"] == 0.5
    with pytest.raises(ConfigError):
        mean_metrics({}, {})


def _hit(doc_id: str, score: float) -> Hit:
    return Hit(
        text="",
        score=score,
        doc_id=doc_id,
        chunk_id=f"{doc_id}:{score}",
        source="",
        uri="",
        partition="",
        position=0,
    )


def test_doc_run_keeps_each_documents_best_chunk_and_drops_other_sources():
    hits = [
        _hit("scifact#1", 0.2),
        _hit("scifact#2", 0.9),
        _hit("scifact#1", 0.7),
        _hit("pydoc#1", 5.0),
    ]
    assert doc_run(hits, "scifact") == {"1": 0.7, "2": 0.9}


# -- BEIR loader -----------------------------------------------------------------------
def write_beir(root: Path, docs: dict, queries: dict, qrels: list[tuple[str, str, int]]) -> Path:
    (root / "qrels").mkdir(parents=True)
    with (root / "corpus.jsonl").open("w") as fh:
        for doc_id, (title, text) in docs.items():
            fh.write(
                json.dumps({"_id": doc_id, "title": title, "text": text, "metadata": {}}) + "\n"
            )
    with (root / "queries.jsonl").open("w") as fh:
        for qid, text in queries.items():
            fh.write(json.dumps({"_id": qid, "text": text, "metadata": {"evidence": "x"}}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in qrels]
    (root / "qrels" / "test.tsv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return root


def test_loader_reads_crlf_qrels_and_only_labelled_queries(tmp_path):
    root = write_beir(
        tmp_path / "beir",
        {"d1": ("T", "x"), "d2": ("", "y")},
        {"q1": "first", "q2": "second", "train": "not in test"},
        [("q2", "d2", 1), ("q1", "d1", 1), ("q1", "d2", 1)],
    )
    qrels = read_qrels(root / "qrels" / "test.tsv")
    assert qrels == {"q2": {"d2": 1}, "q1": {"d1": 1, "d2": 1}}  # no "\r" left in any value
    labelled = load_beir(root)
    assert labelled.queries == {"q2": "second", "q1": "first"}
    assert labelled.corpus_path == root.resolve() / "corpus.jsonl"
    assert list(load_beir(root, limit_queries=1).queries) == ["q2"]


def test_loader_explains_a_missing_folder_and_a_bad_header(tmp_path):
    with pytest.raises(ConfigError, match="CORPUSMILL_EVAL_DATA"):
        load_beir(tmp_path / "nowhere")
    root = write_beir(tmp_path / "beir", {"d": ("", "x")}, {"q": "x"}, [("q", "d", 1)])
    (root / "qrels" / "test.tsv").write_text("q\td\t1\n")
    with pytest.raises(ConfigError, match="header"):
        load_beir(root)


# -- end to end: ingest through Dagster, search through the Searcher ------------------
TINY_DOCS = {
    "101": ("", "Zebrafish regenerate heart muscle after cryoinjury within weeks."),
    "102": ("Vitamin D", "Supplementation lowers fracture risk in elderly women."),
    "103": ("", "Statins reduce cholesterol synthesis by inhibiting HMG-CoA reductase."),
    "104": ("", "Malaria parasites invade red blood cells through the basigin receptor."),
}
TINY_QUERIES = {
    # the exact text of a document: identical tokens give cosine 1 even for a random model
    "1": "Statins reduce cholesterol synthesis by inhibiting HMG-CoA reductase.",
    "2": "zebrafish cryoinjury",
    "3": "basigin receptor malaria",
    "9": "a train query that is not labelled",
}
TINY_QRELS = [("1", "103", 1), ("2", "101", 1), ("3", "104", 1)]


def test_end_to_end_eval_on_a_tiny_beir_folder(tmp_path, tiny_embedder_path, capsys, monkeypatch):
    root = write_beir(tmp_path / "beir", TINY_DOCS, TINY_QUERIES, TINY_QRELS)
    db = str(tmp_path / "eval-db")
    settings = Settings(model=str(tiny_embedder_path), dtype="float32")
    first = run_eval(root, db, chunking=(48, 0), settings=settings)
    assert first["queries"] == 3
    assert first["ingest"]["documents"] == 4
    assert first["ingest"]["chunks_embedded"] == 4
    fts = first["metrics"]["fts"]
    assert fts["ndcg@10"] == 1.0 and fts["recall@100"] == 1.0  # rare words: BM25 finds them
    vector = first["metrics"]["vector"]
    assert vector["recall@100"] == 1.0  # only 4 documents: all are retrieved
    assert 1 / 3 <= vector["ndcg@10"] <= 1.0  # query 1 is its document's exact text
    assert first["metrics"]["hybrid"]["recall@100"] == 1.0

    # a second run reuses the store: nothing embedded again, the same figures
    second = run_eval(root, db, modes=["fts", "vector"], chunking=(48, 0), settings=settings)
    assert second["ingest"]["chunks_embedded"] == 0
    assert second["ingest"]["chunks_reused"] == 4
    assert second["metrics"]["fts"]["ndcg@10"] == fts["ndcg@10"]
    assert second["metrics"]["vector"]["ndcg@10"] == pytest.approx(vector["ndcg@10"])

    # the CLI entry point prints one line per mode in the format
    monkeypatch.setenv("CORPUSMILL_MODEL", str(tiny_embedder_path))
    monkeypatch.setenv("CORPUSMILL_CHUNK_TOKENS", "48")
    monkeypatch.setenv("CORPUSMILL_CHUNK_OVERLAP", "0")
    args = Namespace(data=str(root), db=db, modes="fts", limit_queries=2)
    assert main(args, Settings.from_env()) == 0
    assert capsys.readouterr().out.strip() == "fts nDCG@10=1.0000 Recall@100=1.0000"
