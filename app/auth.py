"""What stands in front of the query service: the bearer token and the body-size limit (a
plain ASGI wrapper, so both hold before FastAPI parses anything), and the rule that the
service binds beyond loopback only with a token."""

from __future__ import annotations

import hmac
import ipaddress
import json

from corpusmill.errors import ConfigError

TOKEN_ENV = "CORPUSMILL_API_TOKEN"


def guard(app, *, token: str | None, max_body_bytes: int):
    """`app` behind the checks, on every HTTP request: the token first (so a client without
    it cannot make the server read a large body), then the size (413 with JSON naming it)."""
    expected = f"Bearer {token}".encode() if token else None

    async def guarded(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        headers = dict(scope["headers"])
        if expected is not None and not hmac.compare_digest(
            headers.get(b"authorization", b""), expected
        ):
            return await _reply(send, 401, "missing or wrong bearer token", "Authorization")
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_body_bytes):
            return await _reply(send, 413, f"body over {max_body_bytes} bytes", "body")
        # Read the body here, counting (a chunked upload declares no length), then replay it.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > max_body_bytes:
                return await _reply(send, 413, f"body over {max_body_bytes} bytes", "body")
            more = message.get("more_body", False)
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await app(scope, replay, send)

    guarded.app = app  # type: ignore[attr-defined]  # the FastAPI app, for tests and for `serve` to reach its state
    return guarded


async def _reply(send, status: int, error: str, field: str) -> None:
    payload = json.dumps({"error": error, "field": field}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
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


MIN_TOKEN_CHARS = 16


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token, or with one a client could
    guess or a header could not carry: fewer than 16 characters, or any whitespace."""
    if is_loopback(host):
        return
    if not token:
        raise ConfigError(
            f"--host {host} is not loopback: set {TOKEN_ENV} (clients then send "
            "'Authorization: Bearer <token>'), or bind 127.0.0.1"
        )
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ConfigError(
            f"--host {host} is not loopback: {TOKEN_ENV} must be at least "
            f"{MIN_TOKEN_CHARS} characters with no whitespace (it has {len(token)}); "
            "e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
