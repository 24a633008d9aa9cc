"""S3 as corpusmill reaches it from Python: one client made from the storage options, the
parts of an `s3://` URI, and the error code of a failed call.

Two users: the store's shard leases (`store/lease.py`: conditional writes, which LanceDB's
Rust client does not expose to Python) and the object-store sources
(`sources/objects.py`: list a prefix, read an object). Both take their connection from the
one setting the store uses, CORPUSMILL_STORAGE_OPTIONS (object_store's keys, as LanceDB
takes them); with no keys there, boto3's standard credential chain applies (environment,
profile, instance or pod role).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

_session: Any = None  # one boto3 session per process: its loaders parse the S3 model once
_session_lock = threading.Lock()


def split_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix")."""
    rest = uri.split("://", 1)[1]
    bucket, _, prefix = rest.partition("/")
    return bucket, prefix.strip("/")


def s3_client(storage_options: Mapping[str, str]):
    """A boto3 S3 client for the store's options (object_store's keys, as LanceDB takes
    them: endpoint, keys, region). No keys given: boto3's standard credential chain.

    Made from one session of corpusmill's own, under a lock: creating clients from a
    session is not thread-safe (boto/boto3#1592), and a code server reads an inbox while a
    run in another thread may open the store's leases; a client, once made, is. One
    session, not one per client: each new session parses the S3 service model again
    (about 13 MB and a tenth of a second)."""
    global _session
    import boto3.session
    from botocore.config import Config

    opts = {k.lower(): v for k, v in storage_options.items()}

    def first(*keys: str) -> str | None:
        return next((opts[k] for k in keys if opts.get(k)), None)

    endpoint = first("aws_endpoint", "endpoint", "aws_endpoint_url", "endpoint_url")
    virtual = first("aws_virtual_hosted_style_request", "virtual_hosted_style_request")
    style = "virtual" if str(virtual).lower() == "true" else "path" if endpoint else "auto"
    with _session_lock:
        if _session is None:
            _session = boto3.session.Session()
        return _session.client(
            "s3",
            endpoint_url=endpoint,
            region_name=first("region", "aws_region", "aws_default_region"),
            aws_access_key_id=first("aws_access_key_id", "access_key_id"),
            aws_secret_access_key=first("aws_secret_access_key", "secret_access_key"),
            aws_session_token=first("aws_session_token", "session_token", "token"),
            config=Config(s3={"addressing_style": style}, retries={"mode": "standard"}),
        )


def error_code(exc: Exception) -> str:
    """The S3 error code of a failed call ("NoSuchKey", "412", ...), "" for other errors."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))
