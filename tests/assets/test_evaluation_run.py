"""`app.evaluation` end to end on a tiny BEIR folder: a real Dagster ingest (tiny saved
model, temporary LanceDB), then every search mode, then the CLI entry point."""

from argparse import Namespace

import pytest

from app.evaluation import main, run_eval
from corpusmill.config import Settings
from corpusmill.errors import UsageError
from tests.beir import write_beir

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
    args = Namespace(data=str(root), db=db, modes="fts", limit_queries=2, generation=None)
    assert main(args, Settings.from_env()) == 0
    assert capsys.readouterr().out.strip() == "fts nDCG@10=1.0000 Recall@100=1.0000"
    # --generation names the generation to score (here the live one, by its id)
    args.generation = second["generation"]
    assert main(args, Settings.from_env()) == 0
    assert capsys.readouterr().out.strip() == "fts nDCG@10=1.0000 Recall@100=1.0000"
    args.generation = "g-none"
    with pytest.raises(UsageError, match="no generation 'g-none'"):
        main(args, Settings.from_env())
