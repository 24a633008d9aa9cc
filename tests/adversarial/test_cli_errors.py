"""Errors as users read them: one line on stderr naming the cause and the setting or
command that fixes it, an exit code per class, no traceback (issue 15, items 3, 4, 7).
`app.cli.main` runs in-process with the environment a user would set."""

from __future__ import annotations

import os

import dagster as dg
import pytest

from app.cli import main
from corpusmill.config import Settings
from corpusmill.errors import ConfigError, InputError, StoreError, UsageError
from corpusmill.store import Store
from resources import build_resources
from tests.runs import ingest, tiny_settings
from tests.user_settings import is_user_setting

USAGE, INPUT, CONFIG, STORE = (
    UsageError.exit_code,
    InputError.exit_code,
    ConfigError.exit_code,
    StoreError.exit_code,
)


@pytest.fixture
def env(monkeypatch, tmp_path, tiny_embedder_path):
    return cli_environment(monkeypatch, tmp_path, tiny_embedder_path)


def cli_environment(monkeypatch, tmp_path, model_path):
    """The environment a user would set (no other CORPUSMILL_ variable): the model at
    `model_path`, a fresh store, and a corpus folder with one file."""
    for name in list(os.environ):
        if is_user_setting(name):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CORPUSMILL_MODEL", str(model_path))
    monkeypatch.setenv("CORPUSMILL_DTYPE", "float32")
    monkeypatch.setenv("CORPUSMILL_CHUNK_TOKENS", "24")
    monkeypatch.setenv("CORPUSMILL_CHUNK_OVERLAP", "4")
    monkeypatch.setenv("CORPUSMILL_DB", str(tmp_path / "db"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("a document about errors users can read")
    return monkeypatch, corpus


def run(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    "setting, value, says",
    [
        ("CORPUSMILL_DEVICE", "tpu", "CORPUSMILL_DEVICE"),
        ("CORPUSMILL_DTYPE", "int3", "CORPUSMILL_DTYPE"),
        ("CORPUSMILL_MAX_BATCH_TOKENS", "-5", "CORPUSMILL_MAX_BATCH_TOKENS"),
        ("CORPUSMILL_MAX_FILE_BYTES", "-1", "CORPUSMILL_MAX_FILE_BYTES"),
        ("CORPUSMILL_CHUNK_TOKENS", "x", "CORPUSMILL_CHUNK_TOKENS"),
        ("CORPUSMILL_MODEL", "{empty}", "CORPUSMILL_MODEL"),
        ("CORPUSMILL_MODEL", "{nothing}", "CORPUSMILL_MODEL"),
    ],
)
def test_bad_settings_are_one_line_naming_the_setting(env, capsys, tmp_path, setting, value, says):
    monkeypatch, corpus = env
    (tmp_path / "empty").mkdir()
    value = value.format(empty=tmp_path / "empty", nothing=tmp_path / "nothing")
    monkeypatch.setenv(setting, value)
    code, err = run(capsys, "ingest", str(corpus))
    assert code == CONFIG
    assert says in one_line(err) or "safetensors" in err


def test_cuda_without_cuda_names_the_setting(env, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch, corpus = env
    monkeypatch.setenv("CORPUSMILL_DEVICE", "cuda")
    code, err = run(capsys, "ingest", str(corpus))
    assert code == CONFIG and "CORPUSMILL_DEVICE=cpu" in one_line(err)


def test_store_path_that_is_a_file(env, capsys, tmp_path):
    monkeypatch, corpus = env
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("CORPUSMILL_DB", str(tmp_path / "afile"))
    code, err = run(capsys, "ingest", str(corpus))
    assert code == STORE and "is a file" in one_line(err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_read_only_store(env, capsys, tmp_path):
    monkeypatch, corpus = env
    db = tmp_path / "ro"
    db.mkdir()
    db.chmod(0o500)
    monkeypatch.setenv("CORPUSMILL_DB", str(db))
    code, err = run(capsys, "ingest", str(corpus))
    db.chmod(0o700)
    assert code == STORE and "permission denied" in one_line(err)


@pytest.fixture
def ingested(env, capsys):
    monkeypatch, corpus = env
    assert main(["ingest", str(corpus)]) == 0
    capsys.readouterr()
    return env


@pytest.mark.parametrize(
    "args, says",
    [
        (["--k", "0"], "--k"),
        (["--k", "-3", "--mode", "fts"], "--k"),
        (["--k", "-3", "--mode", "hybrid"], "--k"),
        (["--rerank", "--candidates", "0"], "--candidates"),
        (["--mode", "nope"], "--help"),
    ],
)
def test_bad_search_arguments_are_usage_errors(ingested, capsys, args, says):
    code, err = run(capsys, "search", "errors", *args)
    assert code == USAGE and says in one_line(err)


def test_damaged_table_is_a_store_error(ingested, capsys, tmp_path):
    for data in (tmp_path / "db" / "embeddings.lance" / "data").glob("*.lance"):
        data.write_bytes(b"garbage")
    code, err = run(capsys, "search", "errors")
    assert code == STORE and "damaged" in one_line(err)


def test_debug_shows_the_traceback(ingested, capsys):
    with pytest.raises(UsageError):
        main(["--debug", "search", "errors", "--k", "0"])


@pytest.mark.parametrize("what", ["missing", "fifo", "no-sources"])
def test_ingests_that_would_do_nothing_fail(env, capsys, tmp_path, what):
    monkeypatch, _corpus = env
    if what == "missing":
        argv = ["ingest", str(tmp_path / "nope")]
    elif what == "fifo":
        os.mkfifo(tmp_path / "pipe")
        argv = ["ingest", str(tmp_path / "pipe")]
    else:
        monkeypatch.setenv("CORPUSMILL_SOURCES", ",")
        argv = ["ingest"]
    code, err = run(capsys, *argv)
    assert code == INPUT and ("ingest" in one_line(err) or "SOURCES" in err)


def test_a_relative_path_with_dotdot_is_ingested(env, capsys, tmp_path):
    monkeypatch, corpus = env
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    code, _err = run(capsys, "ingest", "--json", "../corpus/a.txt")
    assert code == 0
    assert Store(str(tmp_path / "db")).count("embeddings") == 1


def test_search_after_a_failed_first_ingest_says_the_store_is_incomplete(env, capsys):
    monkeypatch, corpus = env

    def crash(table: str) -> None:
        if table == "chunks":  # the run dies once chunks are in, before any vector
            raise RuntimeError("simulated crash")

    # The ingest `corpusmill ingest` runs, with the environment's settings, stopped by the
    # store's commit hook (which only a caller of the builder can inject).
    with pytest.raises(RuntimeError, match="simulated crash"):
        ingest([corpus], Settings.from_env(), on_commit=crash)
    capsys.readouterr()
    code, err = run(capsys, "search", "errors")
    assert code == STORE and "incomplete" in one_line(err) and "corpusmill ingest" in err


def test_the_run_failure_event_carries_the_same_message(tmp_path, tiny_embedder_path):
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a.txt").write_text("text")
    result_error = None
    try:
        ingest(
            [corpus],
            tiny_settings(str(tmp_path / "db"), tiny_embedder_path),
            corpus_config={"max_file_bytes": -1},
        )
    except ConfigError as exc:
        result_error = str(exc)
    assert result_error and "CORPUSMILL_MAX_FILE_BYTES" in result_error
    result = dg.materialize(
        [__import__("assets.corpus", fromlist=["raw_corpus"]).raw_corpus],
        resources=build_resources(tiny_settings(str(tmp_path / "db"), tiny_embedder_path)),
        run_config={
            "ops": {"raw_corpus": {"config": {"sources": [str(corpus)], "max_file_bytes": -1}}}
        },
        partition_key="shard-00",
        raise_on_error=False,
    )
    failures = result.get_step_failure_events()
    assert len(failures) == 1
    error = failures[0].step_failure_data.error
    assert result_error in (error.message + str(error.cause.message if error.cause else ""))
