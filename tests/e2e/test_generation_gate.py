"""The evaluation gate with the real MiniLM: on a small labelled set in the store, a
deliberately damaged copy of the model (its word embeddings shuffled: every vector still
finite and unit length, so the checks pass) is refused promotion, with both nDCG@10
figures and the reason recorded on its generation; a copy that is as good (one weight
moved by 1e-4: another revision, the same quality) passes the same gate and goes live."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from corpusmill.store import Store
from corpusmill.store.generations import read_registry
from tests.generations import live_of
from tests.runs import ingest, tiny_settings

pytestmark = pytest.mark.slow

TOPICS = {
    "volcano": "Volcanoes erupt when magma rises through the crust and lava flows downhill.",
    "violin": "The violin is a string instrument played with a bow in orchestras.",
    "bread": "Bakers knead dough with yeast and flour, then bake the bread in an oven.",
    "glacier": "Glaciers are slow rivers of ice that carve valleys in the mountains.",
    "chess": "Chess players move kings, queens and pawns across a board of 64 squares.",
    "tides": "Ocean tides rise and fall twice a day, pulled by the moon's gravity.",
    "bees": "Honey bees collect nectar from flowers and make honey in their hives.",
    "compiler": "A compiler translates source code into machine instructions.",
    "marathon": "Marathon runners race 42 kilometres through the streets of a city.",
    "vaccine": "A vaccine trains the immune system to recognise a virus before infection.",
    "desert": "Deserts receive little rain, and cacti store water in their stems.",
    "telescope": "Astronomers point telescopes at distant galaxies and planets.",
}
QUERIES = {
    "volcano": "lava and magma eruptions",
    "violin": "bowed string instrument",
    "bread": "baking with yeast and dough",
    "glacier": "ice carving mountain valleys",
    "chess": "board game with a king and pawns",
    "tides": "the moon pulls the sea",
    "bees": "insects that make honey",
    "compiler": "turning source code into machine code",
    "marathon": "long distance running race",
    "vaccine": "immunisation against viruses",
    "desert": "dry places where cacti grow",
    "telescope": "looking at galaxies in the night sky",
}


def labelled_set(root: Path) -> Path:
    """A BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv."""
    root.mkdir()
    with (root / "corpus.jsonl").open("w") as fh:
        for topic, text in TOPICS.items():
            fh.write(json.dumps({"_id": topic, "title": "", "text": text}) + "\n")
    with (root / "queries.jsonl").open("w") as fh:
        for topic, text in QUERIES.items():
            fh.write(json.dumps({"_id": f"q-{topic}", "text": text}) + "\n")
    (root / "qrels").mkdir()
    rows = ["query-id\tcorpus-id\tscore"] + [f"q-{t}\t{t}\t1" for t in QUERIES]
    (root / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n")
    return root


def altered_copy(minilm: Path, dest: Path, damage: bool) -> Path:
    """MiniLM with its word embeddings shuffled (`damage`), or one weight moved by 1e-4."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(minilm, dest)
    weights = load_file(str(dest / "model.safetensors"))
    words = weights["embeddings.word_embeddings.weight"]
    if damage:
        generator = torch.Generator().manual_seed(0)
        words = words[torch.randperm(words.shape[0], generator=generator)]
    else:
        words = words.clone()
        words[1000, 0] += 1e-4
    weights["embeddings.word_embeddings.weight"] = words.contiguous()
    save_file(weights, str(dest / "model.safetensors"), metadata={"format": "pt"})
    return dest


def test_the_gate_refuses_a_worse_model_and_records_why_and_passes_an_equal_one(
    tmp_path, minilm_path
):
    data = labelled_set(tmp_path / "gateset")
    db = str(tmp_path / "db")
    corpus = [f"gateset={data / 'corpus.jsonl'}"]
    gate = {"gate_data": str(data), "gate_source": "gateset", "gate_tolerance": 0.02}
    good = {"chunk_tokens": 128, "chunk_overlap": 0}
    assert ingest(corpus, tiny_settings(db, minilm_path, **good))["success"]
    a = live_of(db)

    damaged = altered_copy(minilm_path, tmp_path / "damaged", damage=True)
    run = ingest(corpus, tiny_settings(db, damaged, **good, **gate))
    assert run["success"] and live_of(db) == a  # built, checked, refused
    assert run["promotion_refused"].startswith("gate:")
    b = read_registry(Store(db)).get(run["generation"])
    assert b.checks["passed"] and not b.gate["passed"]
    assert b.gate["candidate"] < b.gate["live"] - 0.02 and b.gate["queries"] == len(QUERIES)
    assert "below the live generation's" in b.gate["reason"] and "promotion refused" in b.note

    retouched = altered_copy(minilm_path, tmp_path / "retouched", damage=False)
    run = ingest(corpus, tiny_settings(db, retouched, **good, **gate))
    assert run["success"] and run["promotion_refused"] == "no"
    assert live_of(db) == run["generation"] != a
    c = read_registry(Store(db)).get(run["generation"])
    assert c.gate["passed"] and c.gate["candidate"] >= c.gate["live"] - 0.02
