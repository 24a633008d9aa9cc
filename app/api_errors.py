"""Error bodies of the query service, in the shape the caller's API speaks.

Routes under /v1/ answer as the OpenAI API does, so its clients raise their usual
exceptions (`openai.NotFoundError`, `BadRequestError`, `RateLimitError`, ...):

    {"error": {"message": "...", "type": "invalid_request_error", "param": "input",
               "code": "context_length_exceeded"}}

The native routes (/search, /store, ...) keep their own: {"error": "...", "field": "..."}.
"""

from __future__ import annotations

import json
from typing import Any

OPENAI_PREFIX = "/v1/"

# OpenAI's `type` for each status this service answers with on /v1/.
_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


class APIError(Exception):
    """Raised by a route; becomes `status` with the body `error_body` makes."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}


def is_openai_path(path: str) -> bool:
    return path.startswith(OPENAI_PREFIX)


def error_body(
    path: str, status: int, message: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    if is_openai_path(path):
        return {
            "error": {
                "message": message,
                "type": _TYPES.get(status, "invalid_request_error"),
                "param": param,
                "code": code,
            }
        }
    return {"error": message} if param is None else {"error": message, "field": param}


def error_bytes(path: str, status: int, message: str, param: str | None = None, code=None):
    return json.dumps(error_body(path, status, message, param, code)).encode()
