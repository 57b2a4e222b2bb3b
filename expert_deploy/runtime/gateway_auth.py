"""Which secrets a gateway replica expects, read from its rendered config, and one API key.

The rendered gateway YAML names variables and a file, never values (render/gateway.py). The
runtime needs the names to pass those variables to the gateway process, and one key (in
memory only) for readiness probes, ``status`` and ``chat`` when keys are configured.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from expert_deploy.runtime.components import Component
from expert_deploy.runtime.state import ComponentRecord
from expert_deploy.settings import Secret, Settings

_DEFAULT_KEYS_ENV = "EXPERT_DEPLOY_API_KEYS"
_DEFAULT_ADMIN_ENV = "EXPERT_DEPLOY_ADMIN_TOKEN"


@dataclass(frozen=True)
class GatewayAuth:
    """Names of the variables (and the file) a gateway reads its secrets from."""

    api_keys_env: str | None = _DEFAULT_KEYS_ENV
    api_keys_file: Path | None = None
    admin_token_env: str | None = _DEFAULT_ADMIN_ENV

    def api_key(self, settings: Settings) -> Secret | None:
        """The first API key the gateway accepts, or None when it accepts every client."""
        text = settings.environ.get(self.api_keys_env, "") if self.api_keys_env else ""
        if not text.strip() and self.api_keys_file is not None:
            with contextlib.suppress(OSError):
                text = self.api_keys_file.read_text(encoding="utf-8")
        keys = [k.strip() for k in text.replace("\n", ",").split(",") if k.strip()]
        return Secret(keys[0]) if keys else None

    def admin_token(self, settings: Settings) -> Secret | None:
        return settings.secret(self.admin_token_env)


def gateway_config_path(workdir: Path, replica: int) -> Path:
    """Where ``render_deployment`` writes replica ``replica``'s config."""
    return workdir / "rendered" / "gateway" / f"gateway-{replica}.yaml"


def read_gateway_auth(config_path: Path) -> GatewayAuth:
    """The ``auth`` section of a rendered gateway config; the defaults when it is unreadable."""
    try:
        data = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return GatewayAuth()
    auth = data.get("auth") or {}
    keys_file = auth.get("api_keys_file")
    return GatewayAuth(
        auth.get("api_keys_env"),
        Path(keys_file) if keys_file else None,
        auth.get("admin_token_env"),
    )


def probe_key(component: Component, workdir: Path, settings: Settings) -> str | None:
    """The API key a readiness probe through ``component`` must send, in memory only.

    Triton takes none; a gateway reads its own rendered config; NGINX passes requests to the
    gateways, which all share replica 0's auth.
    """
    if component.kind == "triton":
        return None
    config = (
        component.config_path if component.kind == "gateway" else gateway_config_path(workdir, 0)
    )
    key = read_gateway_auth(config).api_key(settings)
    return key.reveal() if key else None


def deployment_auth(records: Iterable[ComponentRecord], workdir: Path) -> GatewayAuth:
    """The auth of a deployment's gateways (every replica is rendered with the same one)."""
    gateways = sorted((r for r in records if r.kind == "gateway"), key=lambda r: r.name)
    if gateways and gateways[0].config_path:
        return read_gateway_auth(Path(gateways[0].config_path))
    return read_gateway_auth(gateway_config_path(workdir, 0))
