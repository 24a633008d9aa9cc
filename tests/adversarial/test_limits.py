"""The smaller faults of issue 27, item 7: a full disk said as such (the store intact, a
rerun after freeing space completes), weak tokens refused for a non-loopback bind."""

from __future__ import annotations

import os
import random
import shutil
import string
import subprocess
import sys
from pathlib import Path

import pytest

from app.auth import check_bind
from app.cli import main
from corpusmill.errors import ConfigError, StoreError
from tests.adversarial.test_cli_errors import cli_environment, one_line
from tests.user_settings import is_user_setting

REPO = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "corpusmill")


@pytest.mark.slow
@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) for a private tmpfs mount",
)
def test_a_full_disk_is_said_as_such_and_a_rerun_after_freeing_space_completes(
    tmp_path, tiny_embedder_path
):
    """The store lives on a real 512 KB tmpfs (a private mount namespace): the first
    ingest runs out of space; the mount is then grown and the same command completes."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    # 1 MB of text in few tokens (a word over 100 characters is one [UNK]): little to
    # embed, much to store. Random letters, so no codec shrinks it under the limit.
    rng = random.Random(0)
    for i in range(8):
        words = ("".join(rng.choices(string.ascii_letters, k=2000)) for _ in range(64))
        (corpus / f"f{i}.txt").write_text(" ".join(words))
    mount = tmp_path / "small"
    mount.mkdir()
    env = {
        # As a user would run it: no instance (`make test` exports DAGSTER_HOME, whose
        # first use prints a notice on stderr), no other setting.
        **{k: v for k, v in os.environ.items() if not is_user_setting(k) and k != "DAGSTER_HOME"},
        "CORPUSMILL_DB": str(mount / "db"),
        "CORPUSMILL_MODEL": str(tiny_embedder_path),
        "CORPUSMILL_DTYPE": "float32",
        "CORPUSMILL_CHUNK_TOKENS": "24",
        "CORPUSMILL_CHUNK_OVERLAP": "4",
    }
    script = f"""
        mount -t tmpfs -o size=512k tmpfs {mount} || exit 99
        {CLI} ingest {corpus} --json >/dev/null 2>{tmp_path}/first.err
        echo "first=$?"
        mount -o remount,size=256m {mount}
        {CLI} ingest {corpus} --json >{tmp_path}/second.out 2>&1
        echo "second=$?"
    """
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], env=env, capture_output=True, text=True, cwd=REPO
    )
    if "first=" not in done.stdout:
        pytest.skip(f"no private tmpfs here: {done.stderr.strip()[:200]}")
    first = one_line((tmp_path / "first.err").read_text())
    assert f"first={StoreError.exit_code}" in done.stdout
    assert "no space left on the device" in first and "the store is intact" in first
    assert "damaged" not in first and "free space and rerun" in first
    assert "second=0" in done.stdout, (tmp_path / "second.out").read_text()[-2000:]


@pytest.mark.parametrize(
    "token", [None, "", "x", "a" * 15, " " * 20, "\t" * 16, "abcd efgh ijkl mnop"]
)
def test_a_weak_token_is_refused_for_a_non_loopback_bind(token):
    with pytest.raises(ConfigError, match="CORPUSMILL_API_TOKEN"):
        check_bind("0.0.0.0", token)


def test_a_strong_token_binds_anywhere_and_loopback_needs_none():
    check_bind("0.0.0.0", "s3cret-t0ken-of-24-chars")
    check_bind("127.0.0.1", None)
    check_bind("::1", "x")


def test_serve_refuses_a_whitespace_token_before_loading_anything(
    monkeypatch, tmp_path, tiny_embedder_path, capsys
):
    cli_environment(monkeypatch, tmp_path, tiny_embedder_path)
    monkeypatch.setenv("CORPUSMILL_API_TOKEN", " " * 32)
    code = main(["serve", "--host", "0.0.0.0", "--port", "0"])
    line = one_line(capsys.readouterr().err)
    assert code == ConfigError.exit_code and "CORPUSMILL_API_TOKEN" in line and "16" in line


def test_a_missing_query_file_is_refused_before_any_model_work(
    monkeypatch, tmp_path, tiny_embedder_path, capsys
):
    _, corpus = cli_environment(monkeypatch, tmp_path, tiny_embedder_path)
    monkeypatch.setenv("CORPUSMILL_QUERIES", str(tmp_path / "no-such-queries.jsonl"))
    code = main(["ingest", str(corpus), "--rerank"])
    line = one_line(capsys.readouterr().err)
    assert code == ConfigError.exit_code and "CORPUSMILL_QUERIES" in line
    assert not (tmp_path / "db").exists(), "nothing may be written (or embedded) first"


def test_a_malformed_query_file_is_refused_before_any_model_work(
    monkeypatch, tmp_path, tiny_embedder_path, capsys
):
    _, corpus = cli_environment(monkeypatch, tmp_path, tiny_embedder_path)
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"id": "q1", "text": "fine"}\nnot json at all\n')
    monkeypatch.setenv("CORPUSMILL_QUERIES", str(queries))
    code = main(["ingest", str(corpus), "--rerank"])
    line = one_line(capsys.readouterr().err)
    assert code == ConfigError.exit_code and "queries.jsonl" in line
    assert not (tmp_path / "db").exists(), "nothing may be written (or embedded) first"
