"""Errors the gateway raises while serving a request, each mapped to one HTTP status.

Tree::

    GatewayError                    (status 500, type "internal_error")
    ├── BadRequestError             400  invalid_request_error  (malformed body, limits)
    │   ├── PayloadTooLargeError    413
    │   └── RequestTimeoutError     408  (request not complete in time)
    ├── AuthenticationError         401  authentication_error
    ├── NotFoundError               404  invalid_request_error  (unknown model / expert)
    ├── ConflictError               409  (stale routing-table generation)
    ├── OverloadedError             429  rate_limit_error       (in-flight cap and queue full)
    └── UpstreamError               502  upstream_error         (Triton answered with an error)
        ├── NoHealthyUpstreamError  503  (no healthy server; fallback rejected or exhausted)
        └── UpstreamTimeoutError    504  (no first token / stream idle too long)

Front ends translate these in one place (the HTTP app and, later, the gRPC front end); the
dispatch core raises nothing else for request-level problems.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "GatewayError",
    "NoHealthyUpstreamError",
    "NotFoundError",
    "OverloadedError",
    "PayloadTooLargeError",
    "RequestTimeoutError",
    "UpstreamError",
    "UpstreamTimeoutError",
]


class GatewayError(Exception):
    """Root of the gateway's request errors; carries what an OpenAI-style error body needs."""

    http_status = 500
    error_type = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.retry_after_s = retry_after_s

    def headers(self) -> list[tuple[str, str]]:
        """Response headers that go with the error: ``retry-after`` when it is set."""
        return [] if self.retry_after_s is None else [("retry-after", str(self.retry_after_s))]

    def to_body(self) -> dict[str, object]:
        """The OpenAI-style error object ``{"error": {...}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class BadRequestError(GatewayError):
    """The request body is malformed, has wrong types or breaks a configured limit."""

    http_status = 400
    error_type = "invalid_request_error"


class PayloadTooLargeError(BadRequestError):
    """The request body is larger than ``limits.max_body_bytes``."""

    http_status = 413


class RequestTimeoutError(BadRequestError):
    """The client did not send its whole request within the server's request timeout."""

    http_status = 408


class AuthenticationError(GatewayError):
    """Missing or wrong API key / admin token."""

    http_status = 401
    error_type = "authentication_error"


class NotFoundError(GatewayError):
    """Unknown model name or expert id."""

    http_status = 404
    error_type = "invalid_request_error"


class ConflictError(GatewayError):
    """A routing table whose generation is not newer than the current one."""

    http_status = 409
    error_type = "invalid_request_error"


class OverloadedError(GatewayError):
    """The chosen upstream's in-flight cap and wait queue are both full."""

    http_status = 429
    error_type = "rate_limit_error"


class UpstreamError(GatewayError):
    """Triton answered with an error or the call failed."""

    http_status = 502
    error_type = "upstream_error"


class NoHealthyUpstreamError(UpstreamError):
    """No healthy upstream can take the request (and fallback is off or found none)."""

    http_status = 503


class UpstreamTimeoutError(UpstreamError):
    """No first token within ``timeouts.first_token_s`` or no chunk within ``idle_stream_s``."""

    http_status = 504
