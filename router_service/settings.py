"""Secrets read from the environment (and the API-key file) once, at start-up.

Nothing else in ``router_service`` reads ``os.environ``; tests pass their own mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from router_service.config import AuthConfig, ConfigError

__all__ = ["Secrets", "load_secrets"]


@dataclass(frozen=True)
class Secrets:
    """API keys and the admin token; ``repr`` never shows them."""

    api_keys: tuple[bytes, ...] = field(default=(), repr=False)
    admin_token: bytes | None = field(default=None, repr=False)

    @property
    def is_api_open(self) -> bool:
        """True when no API key is configured (the gateway then accepts every client)."""
        return not self.api_keys


def _split_keys(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


def load_secrets(auth: AuthConfig, environ: Mapping[str, str]) -> Secrets:
    """Collect API keys from ``auth.api_keys_env`` and ``auth.api_keys_file``, and the admin token.

    Raises:
        ConfigError: the key file is configured but cannot be read.
    """
    keys: list[str] = []
    if auth.api_keys_env:
        keys += _split_keys(environ.get(auth.api_keys_env, ""))
    if auth.api_keys_file is not None:
        try:
            keys += _split_keys(auth.api_keys_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(
                f"cannot read auth.api_keys_file {auth.api_keys_file}: {exc}"
            ) from exc
    token = environ.get(auth.admin_token_env, "").strip()
    return Secrets(
        api_keys=tuple(dict.fromkeys(k.encode("utf-8") for k in keys)),
        admin_token=token.encode("utf-8") if token else None,
    )
