"""nginx.conf for the gateway replicas: SSE-safe HTTP proxying and gRPC load balancing.

Sizing and timeouts follow shared/reference/router.md §4.1 and §4.6: ``proxy_buffering off``
so tokens are relayed as they come, HTTP/1.1 with a cleared ``Connection`` header so upstream
``keepalive`` works, read timeouts far above the 60 s default, and worker connections for
well over 1,000 concurrent streams.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from expert_deploy.errors import RenderError
from expert_deploy.inventory.models import Balancing, Inventory
from expert_deploy.plan.planner import Plan
from expert_deploy.render.environment import check_no_placeholders, render_template

#: Concurrent client streams the config is sized for (ARCHITECTURE.md: 1,000 from one bench).
DESIGN_STREAMS = 2048
#: Longest silence tolerated on a stream (queueing before the first token included).
READ_TIMEOUT_S = 3600
_BALANCING: dict[Balancing, str] = {
    "round_robin": "",  # nginx's default; no directive
    "least_conn": "least_conn",
    "random": "random two least_conn",
}


@dataclass(frozen=True)
class NginxTls:
    """Certificate and key *paths* (never their contents) for TLS on both listeners."""

    certificate: Path
    certificate_key: Path


def grpc_listen_port(inventory: Inventory) -> int:
    """NGINX's gRPC port: ``nginx.grpc_listen_port``, else the HTTP listen port + 1."""
    spec = inventory.nginx
    return spec.grpc_listen_port if spec.grpc_listen_port is not None else spec.listen_port + 1


def tls_of(inventory: Inventory) -> NginxTls | None:
    """The inventory's ``nginx.tls`` paths, checked to exist (nginx would refuse to start).

    Raises:
        RenderError: a certificate or key file is missing.
    """
    spec = inventory.nginx.tls
    if spec is None:
        return None
    for name, path in (
        ("certificate", spec.certificate),
        ("certificate_key", spec.certificate_key),
    ):
        if not path.is_file():
            raise RenderError(
                f"nginx.tls.{name} {path} is not a file; fix the path in the inventory"
            )
    return NginxTls(spec.certificate, spec.certificate_key)


def nginx_context(
    inventory: Inventory, plan: Plan, runtime_dir: Path, tls: NginxTls | None, max_body: int
) -> dict[str, Any]:
    """Every value the template prints.

    Raises:
        RenderError: NGINX is disabled, or its gRPC port collides with a planned port.
    """
    if plan.nginx is None:
        raise RenderError("nginx is disabled in the inventory (nginx.enabled: false)")
    grpc = grpc_listen_port(inventory)
    if grpc == plan.nginx.listen_port:
        raise RenderError(
            f"nginx.grpc_listen_port {grpc} equals nginx.listen_port; choose another port"
        )
    # An explicit argument wins (tests, callers with their own certificates).
    tls = tls if tls is not None else tls_of(inventory)
    taken = {(s.host, p) for s in plan.servers for p in (s.http_port, s.grpc_port, s.metrics_port)}
    taken |= {(g.host, p) for g in plan.gateways for p in (g.http_port, g.grpc_port, g.admin_port)}
    if (plan.nginx.host, grpc) in taken:
        raise RenderError(
            f"nginx gRPC port {grpc} is already planned on host {plan.nginx.host}; "
            "set nginx.grpc_listen_port to a free port"
        )
    return nginx_values(
        deployment=plan.name,
        runtime_dir=runtime_dir,
        gateways=[(g.address, g.http_port, g.grpc_port) for g in plan.gateways],
        listen_address=plan.nginx.address,
        http_port=plan.nginx.listen_port,
        grpc_port=grpc,
        strategy=inventory.nginx.strategy,
        tls=tls,
        max_body=max_body,
    )


def nginx_values(
    *,
    deployment: str,
    runtime_dir: Path,
    gateways: Sequence[tuple[str, int, int]],
    listen_address: str,
    http_port: int,
    grpc_port: int,
    strategy: Balancing,
    tls: NginxTls | None,
    max_body: int,
) -> dict[str, Any]:
    """The template's values for NGINX on ``listen_address`` in front of ``gateways``.

    ``gateways`` holds each replica's (address, HTTP port, gRPC port). Separate from
    :func:`nginx_context` so scripts/bench_gateway.py measures this very config.
    """
    keepalive = 64
    worker_connections = 2 * DESIGN_STREAMS + 2 * keepalive * len(gateways) + 256
    return {
        "deployment": deployment,
        "prefix": str(runtime_dir),
        "pid_path": str(runtime_dir / "nginx.pid"),
        "error_log": str(runtime_dir / "logs" / "error.log"),
        "access_log": str(runtime_dir / "logs" / "access.log"),
        "temp_dir": str(runtime_dir / "temp"),
        "streams": DESIGN_STREAMS,
        "worker_connections": worker_connections,
        "rlimit_nofile": 2 * worker_connections,
        "client_max_body_size": max_body,
        "balancing": _BALANCING[strategy],
        "http_servers": [f"{address}:{http}" for address, http, _ in gateways],
        "grpc_servers": [f"{address}:{grpc}" for address, _, grpc in gateways],
        "max_fails": 3,
        "fail_timeout_s": 10,
        "keepalive": keepalive,
        # Below the gateway's own idle timeout (75 s, router_service/http_server.py).
        "keepalive_timeout_s": 60,
        "http_listen_address": listen_address,
        "http_listen": http_port,
        "grpc_listen": grpc_port,
        "tls": tls,
        "connect_timeout_s": 5,
        "read_timeout_s": READ_TIMEOUT_S,
    }


def render_nginx(env: jinja2.Environment, context: dict[str, Any]) -> str:
    """Render nginx.conf from :func:`nginx_context`'s values.

    Raises:
        RenderError: the template fails or leaves a placeholder.
    """
    text = render_template(env, "nginx/nginx.conf.j2", context)
    check_no_placeholders(text, "nginx/nginx.conf")
    return text
