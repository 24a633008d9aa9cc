"""Settings for scaling out: object-store options, the executor, the Ray workers."""

import dagster as dg
import pytest

from corpusmill.config import Settings
from corpusmill.errors import ConfigError
from resources import build_resources


def test_storage_options_are_read_as_json_and_reach_the_store_resource(tmp_path):
    settings = Settings.from_env(
        {
            "CORPUSMILL_DB": "s3://bucket/prefix",
            "CORPUSMILL_STORAGE_OPTIONS": '{"region": "eu-west-1", "allow_http": true}',
            "CORPUSMILL_EXECUTOR": "Ray",
            "CORPUSMILL_RAY_WORKERS": "3",
        }
    )
    assert settings.storage_options == {"region": "eu-west-1", "allow_http": "true"}
    assert (settings.executor, settings.ray_workers) == ("ray", 3)
    # The run's Store, opened on a local folder (an s3:// one would reach for credentials).
    local = settings.with_overrides({"db": str(tmp_path / "db")})
    with dg.build_resources({"store": build_resources(local)["store"]}) as resources:
        store = resources.store
        assert store.uri == str(tmp_path / "db")
        assert store.storage_options == {"region": "eu-west-1", "allow_http": "true"}


def test_defaults_are_local_with_no_options():
    settings = Settings.from_env({})
    assert settings.storage_options == {} and settings.executor == "local"


@pytest.mark.parametrize(
    "env,message",
    [
        ({"CORPUSMILL_STORAGE_OPTIONS": "region=x"}, "not JSON"),
        ({"CORPUSMILL_STORAGE_OPTIONS": '["x"]'}, "JSON object"),
        ({"CORPUSMILL_EXECUTOR": "spark"}, "local, ray"),
    ],
)
def test_bad_values_say_how_to_fix_them(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_ray_actors_get_a_gpu_each_on_a_gpu_cluster_and_half_a_cpu_otherwise():
    from corpusmill.scale.ray_embed import actor_resources

    assert actor_resources(0) == {"num_cpus": 0.5}
    assert actor_resources(8) == {"num_gpus": 1, "num_cpus": 1}
    assert actor_resources(0.5) == {"num_cpus": 0.5}  # a fraction of a GPU is not one
    assert actor_resources(8, "cpu") == {"num_cpus": 0.5}  # CORPUSMILL_DEVICE=cpu wins
    assert actor_resources(8, "cuda") == {"num_gpus": 1, "num_cpus": 1}
    with pytest.raises(ConfigError, match="CORPUSMILL_DEVICE"):
        actor_resources(0, "cuda")


def test_the_spec_shipped_to_the_workers_leaves_auto_for_the_worker_to_resolve(
    monkeypatch, tiny_embedder_path
):
    """The driver has no GPU; the worker on a GPU actor does. The spec must not carry the
    driver's answer: "auto" travels, and resolves to cuda where torch sees a GPU."""
    import torch

    from corpusmill.model import Model

    spec = Settings(model=str(tiny_embedder_path)).embedder_spec()
    assert spec.device == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    lineage = Model(spec).lineage()  # as the worker reports it, before loading weights
    assert (lineage["device"], lineage["dtype"]) == ("cuda", "bfloat16")
