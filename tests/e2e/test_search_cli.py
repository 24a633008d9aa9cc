"""`corpusmill search` in a subprocess: modes, filters, --rerank, injection via the CLI."""

import json
import os
import subprocess
import sys

import pytest

from corpusmill.ids import partition_of
from corpusmill.model import Model, ModelSpec
from corpusmill.store import Store, rows_to_table
from corpusmill.store.upkeep import index_for_search
from tests.e2e.procs import with_checkout

TEXTS = {
    "pydoc#exceptions": "try and except clauses catch an exception raised in the block",
    "pydoc#with": "the with statement wraps a block with a context manager",
    "notes#x' OR '1'='1": "a document whose id looks like an injection",
}


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_embedder_path):
    embedder = Model(ModelSpec(path=str(tiny_embedder_path), dtype="float32"))
    store = Store(str(tmp_path_factory.mktemp("cli") / "db"))
    table = store.ensure_embeddings(embedder.card)
    vectors = embedder.embed(list(TEXTS.values()))
    rows = [
        {
            "chunk_id": f"c{i}",
            "doc_id": d,
            "doc_key": f"k{i}",
            "source": d.split("#")[0],
            "uri": d,
            "partition": partition_of(d),
            "position": 0,
            "text": t,
            "content_hash": f"h{i}",
            "doc_hash": f"d{i}",
            "n_tokens": 9,
            "chunker": "t",
            "vector": v.tolist(),
            "model_id": embedder.card.model_id,
        }
        for i, ((d, t), v) in enumerate(zip(TEXTS.items(), vectors, strict=True))
    ]
    table.add(
        rows_to_table([{k: r.get(k) for k in table.schema.names} for r in rows], table.schema)
    )
    index_for_search(store)  # what the embeddings step does after its commits
    return with_checkout(
        {
            **os.environ,
            "CORPUSMILL_DB": store.uri,
            "CORPUSMILL_MODEL": str(tiny_embedder_path),
            "CORPUSMILL_DTYPE": "float32",
            "CORPUSMILL_RERANKER": "",
        }
    )


def search(env, *args):
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "search", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.slow
def test_injection_through_the_cli_matches_nothing_extra(env):
    before = Store(env["CORPUSMILL_DB"]).count("embeddings")
    assert search(env, "block", "--mode", "vector", "--doc-id", "x' OR '1'='1") == []
    hostile_source = "pydoc'; DELETE FROM embeddings; --"
    assert search(env, "block", "--mode", "hybrid", "--source", hostile_source) == []
    hits = search(env, "injection", "--doc-id", "notes#x' OR '1'='1")
    assert [h["doc_id"] for h in hits] == ["notes#x' OR '1'='1"]
    assert Store(env["CORPUSMILL_DB"]).count("embeddings") == before


@pytest.mark.slow
def test_rerank_without_a_cross_encoder_uses_the_bi_encoder(env):
    hits = search(env, "context manager", "--mode", "fts", "--rerank", "--k", "2")
    assert hits and {h["scorer"] for h in hits} == {"bi-encoder"}


def test_bad_partition_is_a_clear_error(env):
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "search", "x", "--partition", "1' OR '1'='1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "shard-00" in out.stderr


@pytest.mark.slow
def test_queries_file_gives_one_json_line_per_query_as_the_searcher_does(
    env, tmp_path, tiny_embedder_path
):
    from corpusmill.search import Searcher

    queries = [("a", "catch an exception"), (7, "context manager"), ("b", "injection")]
    path = tmp_path / "queries.jsonl"
    path.write_text("".join(json.dumps({"id": q, "text": t}) + "\n" for q, t in queries))
    for mode in ("vector", "fts", "hybrid"):
        out = subprocess.run(
            [sys.executable, "-m", "app.cli", "search", "--queries", str(path)]
            + ["--mode", mode, "--k", "2", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        lines = [json.loads(line) for line in out.stdout.splitlines()]
        assert [line["id"] for line in lines] == [q for q, _ in queries]
        embedder = Model(ModelSpec(path=str(tiny_embedder_path), dtype="float32"))
        reference = Searcher(env["CORPUSMILL_DB"], embedder=embedder)
        for line, (_, text) in zip(lines, queries, strict=True):
            want = reference.search(text, k=2, mode=mode)
            assert [h["chunk_id"] for h in line["hits"]] == [h.chunk_id for h in want]
            assert [h["score"] for h in line["hits"]] == pytest.approx([h.score for h in want])


def test_queries_file_with_a_bad_line_names_it(env, tmp_path):
    path = tmp_path / "queries.jsonl"
    path.write_text('{"id": 1, "text": "fine"}\n{"id": 2}\n')
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "search", "--queries", str(path), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 3 and "queries.jsonl:2" in out.stderr  # an input error


@pytest.mark.slow
def test_a_cold_vector_search_imports_no_torch_and_finds_what_the_engine_finds(
    env, tiny_embedder_path
):
    """A one-query process embeds with the NumPy forward (model/numpy_forward.py): no
    `import torch` (2-3 s of a cold search), the same hits as the engine in a warm process."""
    from corpusmill.search import Searcher

    query = "catch an exception in a block"
    search(env, query)  # the first process on a machine checks the tokenizer (Transformers)
    script = (
        "import json, sys\n"
        "from app.cli import main\n"
        f"rc = main(['search', {query!r}, '--k', '3', '--json'])\n"
        "print(json.dumps(['torch' in sys.modules, rc]), file=sys.stderr)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert json.loads(out.stderr.splitlines()[-1]) == [False, 0], out.stderr
    hits = json.loads(out.stdout)
    engine = Model(ModelSpec(path=str(tiny_embedder_path), dtype="float32")).load()
    want = Searcher(env["CORPUSMILL_DB"], embedder=engine).search(query, k=3)
    assert [h["chunk_id"] for h in hits] == [h.chunk_id for h in want]
    assert [h["score"] for h in hits] == pytest.approx([h.score for h in want], abs=1e-4)
