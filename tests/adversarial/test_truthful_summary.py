"""The summary tells the truth (issue 27, item 6): every quarantine is counted, by stage,
the sample names the first ones, and a run that could embed nothing fails with one line
naming the likely cause, the model. The model is a real tiny BERT whose `[CLS]` embedding
row is NaN, so every input (each starts with `[CLS]`) embeds to NaN."""

from __future__ import annotations

import json

import pytest

from app.cli import main
from corpusmill.errors import ConfigError
from tests.adversarial.test_cli_errors import cli_environment, one_line
from tools.tiny_models import save_tiny_embedder


@pytest.fixture(scope="session")
def all_nan_embedder_path(tmp_path_factory):
    return save_tiny_embedder(tmp_path_factory.mktemp("all-nan"), poison_token="[CLS]")


@pytest.fixture
def corpus(monkeypatch, tmp_path, all_nan_embedder_path):
    _, corpus = cli_environment(monkeypatch, tmp_path, all_nan_embedder_path)
    (corpus / "b.txt").write_text("a second document about rivers and lakes")
    (corpus / "latin.txt").write_bytes(b"caf\xe9 au lait")  # quarantined at reading
    return corpus


def test_a_run_that_embeds_nothing_fails_naming_the_model(corpus, capsys):
    code = main(["ingest", str(corpus), "--json"])
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert code == ConfigError.exit_code
    line = one_line(err)
    assert line.startswith("corpusmill: error: nothing could be embedded")
    assert "CORPUSMILL_MODEL" in line and "model" in line
    assert summary["success"] is False and summary["chunks_embedded"] == 0
    by_stage = summary["quarantined_by_stage"]
    assert by_stage["source"] == 1 and by_stage["embed"] == summary["chunks"] >= 2
    assert summary["quarantined"] == by_stage["source"] + by_stage["embed"]
    sample = summary["quarantine_sample"]
    assert "latin.txt" in sample and "a.txt#chunk0" in sample and "non-finite" in sample


def test_the_plain_summary_counts_every_stage(corpus, capsys):
    code = main(["ingest", str(corpus)])
    out, err = capsys.readouterr()
    assert code == ConfigError.exit_code
    quarantined = next(line for line in out.splitlines() if "quarantined:" in line)
    assert "1 at source" in quarantined and "at embed" in quarantined
    assert "latin.txt" in err and "chunk0" in err
    assert err.strip().splitlines()[-1].startswith("corpusmill: error: nothing could be embedded")
