"""Resources are built from the settings in one place and hold exactly the spec they were
given (a field dropped on the way would silently run another model configuration)."""

from corpusmill.config import Settings
from corpusmill.model import ModelSpec
from resources import build_resources
from resources.models import CrossEncoderResource, EmbedderResource


def test_model_resources_round_trip_every_spec_field():
    spec = ModelSpec(
        path="/models/x",
        model_id="x",
        device="cpu",
        dtype="float32",
        max_batch_tokens=123,
        max_seq_length=77,
        compile=True,
        pack_linear=False,
        tokenize_threads=3,
    )
    assert EmbedderResource.from_spec(spec).spec() == spec
    cross = spec.with_(kind="cross-encoder")
    assert CrossEncoderResource.from_spec(cross).spec() == cross


def test_build_resources_passes_the_environment_down():
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
        }
    )
    res = build_resources(settings)
    assert res["store"].uri == "/tmp/somewhere"
    assert res["embedder"].spec() == ModelSpec(path="/models/e", dtype="float32")
    assert res["reranker"].spec().path == "/models/c" and res["reranker"].configured
    assert res["settings"].sources == ["a=/x", "/y"]
    assert res["settings"].chunk_overlap == 0 and res["settings"].chunk_tokens == 200
    assert res["settings"].rerank_k == 9
    assert res["settings"].rerank_queries == "/q.jsonl" and res["settings"].ray_workers == 3
    assert not build_resources(Settings())["reranker"].configured
