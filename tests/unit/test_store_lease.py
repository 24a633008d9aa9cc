"""The S3 lease's pure parts: URI and option mapping, and the error for a server without
conditional puts (botocore's Stubber answers as such a server does; no network)."""

from __future__ import annotations

import pytest

pytest.importorskip("boto3", reason="the `scale` extra (make install adds it)")

from botocore.stub import Stubber  # noqa: E402

from corpusmill.errors import ConfigError  # noqa: E402
from corpusmill.store.lease import S3Leases, s3_client, split_s3_uri  # noqa: E402

OPTIONS = {
    "aws_access_key_id": "k",
    "aws_secret_access_key": "s",
    "aws_endpoint": "http://127.0.0.1:9",
    "region": "us-east-1",
    "allow_http": "true",
}


def test_uri_and_lease_keys():
    assert split_s3_uri("s3://bucket/a/b/") == ("bucket", "a/b")
    assert split_s3_uri("s3://bucket") == ("bucket", "")
    leases = S3Leases("s3://bucket/db", OPTIONS)
    assert leases.key("shard-03") == "db/.locks/shard-03.json"
    assert S3Leases("s3://bucket", OPTIONS).key("create") == ".locks/create.json"


def test_the_client_uses_the_stores_endpoint_keys_and_region():
    client = s3_client(OPTIONS)
    assert client.meta.endpoint_url == "http://127.0.0.1:9"
    assert client.meta.region_name == "us-east-1"
    assert client._request_signer._credentials.access_key == "k"


def test_a_server_without_conditional_puts_is_a_configuration_error():
    leases = S3Leases("s3://bucket/db", OPTIONS)
    with Stubber(leases.client) as stub:
        stub.add_client_error("put_object", "NotImplemented", http_status_code=501)
        with pytest.raises(ConfigError, match=r"conditional puts.*s3\+ddb://"):
            leases.acquire("shard-00")
