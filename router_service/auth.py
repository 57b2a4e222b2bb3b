"""Bearer-token checks in constant time."""

from __future__ import annotations

import hmac

from router_service.errors import AuthenticationError

__all__ = ["bearer_token", "require_admin_token", "require_api_key"]


def bearer_token(authorization: str | None) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header, or ``None``."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip().encode("utf-8")


def _matches_any(token: bytes, allowed: tuple[bytes, ...]) -> bool:
    # Compare against every key (no early exit) so timing does not reveal which one matched.
    found = False
    for key in allowed:
        found |= hmac.compare_digest(token, key)
    return found


def require_api_key(authorization: str | None, api_keys: tuple[bytes, ...]) -> None:
    """Pass when no key is configured or the bearer token is one of them.

    Raises:
        AuthenticationError: keys are configured and the token is missing or wrong.
    """
    if not api_keys:
        return
    token = bearer_token(authorization)
    if token is None or not _matches_any(token, api_keys):
        raise AuthenticationError(
            "Incorrect or missing API key; send 'Authorization: Bearer <key>'.",
            code="invalid_api_key",
        )


def require_admin_token(authorization: str | None, admin_token: bytes | None) -> None:
    """Pass when no admin token is configured (loopback only) or the bearer token matches.

    Raises:
        AuthenticationError: the token is missing or wrong.
    """
    if admin_token is None:
        return
    token = bearer_token(authorization)
    if token is None or not hmac.compare_digest(token, admin_token):
        raise AuthenticationError("Incorrect or missing admin token.", code="invalid_admin_token")
