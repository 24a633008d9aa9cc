"""What stands in front of the query service: the bearer token, the body-size limit and the
in-flight request bound (a plain ASGI wrapper, so all three hold before FastAPI parses
anything), and the rule that the service binds beyond loopback only with a token."""

from __future__ import annotations

import hmac
import ipaddress

from app.api_errors import error_bytes, is_openai_path
from app.limits import Admission
from corpusmill.errors import ConfigError

TOKEN_ENV = "CORPUSMILL_API_TOKEN"
OPEN_PATHS = frozenset({"/health"})  # answered without a token: liveness probes carry none
AUTHORIZED = "corpusmill.authorized"  # scope key: did the request carry the token (or none is set)


def guard(app, *, token: str | None, max_body_bytes: int, admission: Admission | None = None):
    """`app` behind the checks, on every HTTP request: the token first (so a client without
    it cannot make the server read a large body; /health is open), then the in-flight
    bound for a POST (429 with Retry-After, before its body is read), then the size (413
    with JSON naming it). Errors on /v1/ routes have the OpenAI API's shape."""
    expected = f"Bearer {token}".encode() if token else None

    async def guarded(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        path = scope["path"]
        headers = dict(scope["headers"])
        authorized = expected is None or hmac.compare_digest(
            headers.get(b"authorization", b""), expected
        )
        scope[AUTHORIZED] = authorized  # an open route tells an anonymous caller less
        if not authorized and path not in OPEN_PATHS:
            if is_openai_path(path):
                body = error_bytes(path, 401, "missing or wrong API key", code="invalid_api_key")
            else:
                body = error_bytes(path, 401, "missing or wrong bearer token", "Authorization")
            return await _reply(send, 401, body, [(b"www-authenticate", b"Bearer")])
        if admission is None or scope["method"] != "POST":
            return await _checked(app, scope, receive, send, headers, path, max_body_bytes)
        if not admission.try_enter():
            message = f"over {admission.limits.max_inflight} requests in flight; retry later"
            return await _reply(
                send,
                429,
                error_bytes(path, 429, message, code="rate_limit_exceeded"),
                [(b"retry-after", str(admission.retry_after_s()).encode())],
            )
        try:
            return await _checked(app, scope, receive, send, headers, path, max_body_bytes)
        finally:
            admission.leave()

    guarded.app = app  # type: ignore[attr-defined]  # the FastAPI app, for tests and for `serve` to reach its state
    return guarded


async def _checked(app, scope, receive, send, headers, path: str, max_body_bytes: int):
    too_big = error_bytes(path, 413, f"body over {max_body_bytes} bytes", "body")
    declared = headers.get(b"content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_body_bytes):
        return await _reply(send, 413, too_big)
    # Read the body here, counting (a chunked upload declares no length), then replay it.
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > max_body_bytes:
            return await _reply(send, 413, too_big)
        more = message.get("more_body", False)
    body, sent = b"".join(chunks), False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return await app(scope, replay, send)


async def _reply(send, status: int, payload: bytes, headers=()) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token."""
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"--host {host} is not loopback: set {TOKEN_ENV} (clients then send "
            "'Authorization: Bearer <token>'), or bind 127.0.0.1"
        )
