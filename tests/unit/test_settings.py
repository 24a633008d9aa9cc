"""Settings: read from the environment once, overridden per run by asset config fields of
the same name, checked either way."""

import pytest

from corpusmill.config import Settings, debug_requested
from corpusmill.errors import ConfigError
from corpusmill.model import ModelSpec


def test_the_environment_is_read_into_one_settings_object():
    settings = Settings.from_env(
        {
            "CORPUSMILL_DB": "/tmp/somewhere",
            "CORPUSMILL_MODEL": "/models/e",
            "CORPUSMILL_RERANKER": "/models/c",
            "CORPUSMILL_DTYPE": "float32",
            "CORPUSMILL_SOURCES": "a=/x, /y",
            "CORPUSMILL_CHUNK_OVERLAP": "0",
            "CORPUSMILL_RERANK_K": "9",
            "CORPUSMILL_QUERIES": "/q.jsonl",
            "CORPUSMILL_RAY_WORKERS": "3",
            "DAGSTER_HOME": "/tmp/home",
            "CORPUSMILL_FORWARD": "Transformers",
            "CORPUSMILL_CPU_STREAMS": "1",
            "CORPUSMILL_CACHE_DIR": "/tmp/cache",
        }
    )
    assert settings.db == "/tmp/somewhere" and settings.dagster_home == "/tmp/home"
    run = {"forward": "transformers", "cpu_streams": 1, "cache_dir": "/tmp/cache"}
    assert settings.embedder_spec() == ModelSpec(path="/models/e", dtype="float32", **run)
    assert settings.reranker_spec() == ModelSpec(
        path="/models/c", kind="cross-encoder", dtype="float32", **run
    )
    assert settings.sources == ("a=/x", "/y")
    assert settings.chunk_overlap == 0 and settings.chunk_tokens == 200
    assert settings.rerank_k == 9 and settings.queries == "/q.jsonl"
    assert settings.ray_workers == 3
    assert not Settings().reranker_spec().configured and Settings().dagster_home == ""


def test_overrides_replace_what_they_set_and_leave_the_rest():
    base = Settings(chunk_tokens=100)
    run = base.with_overrides(
        {"chunk_tokens": 24, "chunk_overlap": None, "sources": ["a", "b"], "id_field": "_id"}
    )
    assert (run.chunk_tokens, run.chunk_overlap) == (24, base.chunk_overlap)
    assert run.sources == ("a", "b")  # a config list becomes the settings' tuple
    assert base.with_overrides({"chunk_tokens": None, "split": "test"}) is base


@pytest.mark.parametrize(
    "override, says",
    [
        ({"max_file_bytes": -1}, "CORPUSMILL_MAX_FILE_BYTES"),
        ({"rerank_k": 0}, "CORPUSMILL_RERANK_K"),
        ({"chunk_tokens": 0}, "CORPUSMILL_CHUNK_TOKENS"),
    ],
)
def test_an_override_is_checked_like_the_environment(override, says):
    with pytest.raises(ConfigError, match=says):
        Settings().with_overrides(override)


def test_debug_is_read_on_its_own():
    assert debug_requested({"CORPUSMILL_DEBUG": "1", "CORPUSMILL_CHUNK_TOKENS": "x"})
    assert not debug_requested({"CORPUSMILL_DEBUG": "no"}) and not debug_requested({})


def test_the_lifecycle_settings_are_read_and_checked_before_any_model_work(tmp_path):
    gate = tmp_path / "gate"
    (gate / "qrels").mkdir(parents=True)
    (gate / "queries.jsonl").write_text("")
    (gate / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n")
    settings = Settings.from_env(
        {
            "CORPUSMILL_PROMOTE": "Manual",
            "CORPUSMILL_GATE_DATA": str(gate),
            "CORPUSMILL_GATE_SOURCE": "labelled",
            "CORPUSMILL_GATE_TOLERANCE": "0.05",
        }
    )
    assert settings.promote == "manual"
    spec = settings.gate()
    assert spec is not None and (spec.data, spec.source, spec.tolerance) == (
        str(gate),
        "labelled",
        0.05,
    )
    assert Settings().promote == "auto" and Settings().gate() is None
    with pytest.raises(ConfigError, match="CORPUSMILL_PROMOTE"):
        Settings().with_overrides({"promote": "sometimes"})  # a run's override, checked too
    for environ, says in (
        ({"CORPUSMILL_PROMOTE": "sometimes"}, "CORPUSMILL_PROMOTE.*auto, manual"),
        ({"CORPUSMILL_GATE_TOLERANCE": "lots"}, "CORPUSMILL_GATE_TOLERANCE.*not a number"),
        ({"CORPUSMILL_GATE_TOLERANCE": "2"}, "CORPUSMILL_GATE_TOLERANCE.*between 0 and 1"),
        ({"CORPUSMILL_GATE_DATA": str(tmp_path)}, "CORPUSMILL_GATE_DATA.*not a BEIR folder"),
    ):
        with pytest.raises(ConfigError, match=says):
            Settings.from_env(environ)


def test_the_reader_limits_are_settings_passed_down_whole():
    from corpusmill.sources import ReadLimits, ReadOptions, RecordFields

    settings = Settings.from_env(
        {
            "CORPUSMILL_MAX_PAGES": "40",
            "CORPUSMILL_EXTRACT_TIMEOUT": "2.5",
            "CORPUSMILL_EXTRACT_MEMORY_MB": "768",
            "CORPUSMILL_MAX_FILE_BYTES": "1000",
            "CORPUSMILL_STORAGE_OPTIONS": '{"region": "eu-west-1"}',
        }
    )
    limits = ReadLimits(max_pages=40, timeout_s=2.5, memory_mb=768)
    assert settings.read_limits() == limits
    fields = RecordFields(id="key")
    assert settings.read_options(fields) == ReadOptions(
        fields=fields,
        max_file_bytes=1000,
        limits=limits,
        storage_options={"region": "eu-west-1"},
    )
    defaults = Settings().read_limits()
    assert (defaults.max_pages, defaults.timeout_s, defaults.memory_mb) == (5000, 120.0, 2048)


@pytest.mark.parametrize(
    "env, says",
    [
        ({"CORPUSMILL_MAX_PAGES": "0"}, "CORPUSMILL_MAX_PAGES=0 must be >= 1"),
        (
            {"CORPUSMILL_EXTRACT_MEMORY_MB": "256"},
            "CORPUSMILL_EXTRACT_MEMORY_MB=256 must be >= 512",
        ),
        ({"CORPUSMILL_EXTRACT_TIMEOUT": "0"}, "CORPUSMILL_EXTRACT_TIMEOUT=0.0 must be a number"),
        ({"CORPUSMILL_EXTRACT_TIMEOUT": "inf"}, "CORPUSMILL_EXTRACT_TIMEOUT=inf must be a number"),
        (
            {"CORPUSMILL_EXTRACT_TIMEOUT": "soon"},
            "CORPUSMILL_EXTRACT_TIMEOUT='soon' is not a number",
        ),
        ({"CORPUSMILL_MAX_PAGES": "many"}, "CORPUSMILL_MAX_PAGES='many' is not an integer"),
    ],
)
def test_reader_limits_are_checked(env, says):
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(".", r"\.")):
        Settings.from_env(env)
