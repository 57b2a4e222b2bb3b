"""nginx.conf for the gateway replicas: SSE-safe HTTP proxying and gRPC load balancing.

Sizing and timeouts follow shared/reference/router.md §4.1 and §4.6: ``proxy_buffering off``
so tokens are relayed as they come, HTTP/1.1 with a cleared ``Connection`` header so upstream
``keepalive`` works, read timeouts far above the 60 s default, and worker connections for
well over 1,000 concurrent streams.
"""

from __future__ import annotations

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
    """NGINX's gRPC port: the HTTP listen port + 1 (the inventory has no field for it yet)."""
    return inventory.nginx.listen_port + 1


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
    taken = {(s.host, p) for s in plan.servers for p in (s.http_port, s.grpc_port, s.metrics_port)}
    taken |= {(g.host, p) for g in plan.gateways for p in (g.http_port, g.grpc_port, g.admin_port)}
    if (plan.nginx.host, grpc) in taken:
        raise RenderError(
            f"nginx gRPC port {grpc} (nginx.listen_port + 1) is already planned on host "
            f"{plan.nginx.host}; choose another nginx.listen_port"
        )
    keepalive = 64
    worker_connections = 2 * DESIGN_STREAMS + 2 * keepalive * len(plan.gateways) + 256
    return {
        "deployment": plan.name,
        "prefix": str(runtime_dir),
        "pid_path": str(runtime_dir / "nginx.pid"),
        "error_log": str(runtime_dir / "logs" / "error.log"),
        "access_log": str(runtime_dir / "logs" / "access.log"),
        "temp_dir": str(runtime_dir / "temp"),
        "streams": DESIGN_STREAMS,
        "worker_connections": worker_connections,
        "rlimit_nofile": 2 * worker_connections,
        "client_max_body_size": max_body,
        "balancing": _BALANCING[inventory.nginx.strategy],
        "http_servers": [f"{g.address}:{g.http_port}" for g in plan.gateways],
        "grpc_servers": [f"{g.address}:{g.grpc_port}" for g in plan.gateways],
        "max_fails": 3,
        "fail_timeout_s": 10,
        "keepalive": keepalive,
        "keepalive_timeout_s": 60,
        "http_listen_address": plan.nginx.address,
        "http_listen": plan.nginx.listen_port,
        "grpc_listen": grpc,
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
