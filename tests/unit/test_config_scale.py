"""Settings for scaling out: object-store options, the executor, the Ray workers."""

import pytest

from corpusmill.config import Settings
from corpusmill.errors import ConfigError
from resources import build_resources


def test_storage_options_are_read_as_json_and_reach_the_store_resource():
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
    store = build_resources(settings)["store"]
    assert store.uri == "s3://bucket/prefix"
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
