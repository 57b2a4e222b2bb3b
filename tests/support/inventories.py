"""Copies of shipped inventories on free loopback ports, so tests can run side by side.

The shipped files use fixed ports (8000…, 9000…, 8080); a test that brings a deployment up
writes a copy into its temporary folder with every port block moved to a free range, and with
paths (corpus, configs) made absolute so they still resolve from there.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
INVENTORIES = REPO_ROOT / "inventories"


def _block_is_free(start: int, count: int) -> bool:
    for port in range(start, start + count):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_block(count: int, *, rng: random.Random | None = None) -> int:
    """First port of ``count`` consecutive ports free on 127.0.0.1 (below the ephemeral range)."""
    rng = rng or random.Random()
    for _ in range(200):
        start = rng.randrange(20000, 32000 - count)
        if _block_is_free(start, count):
            return start
    raise RuntimeError(f"no block of {count} free ports found")


def _absolute_paths(node: Any, base: Path) -> Any:
    """Make relative ``corpus``/``path``/``config``-like values absolute against ``base``."""
    keys = {"corpus", "path", "config", "tfidf", "kmeans", "api_keys_file"}
    if isinstance(node, dict):
        return {
            k: (
                str((base / v).resolve())
                if k in keys and isinstance(v, str)
                else _absolute_paths(v, base)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_absolute_paths(v, base) for v in node]
    return node


def materialize(name: str, target_dir: Path, **overrides: Any) -> Path:
    """Write ``inventories/<name>.yaml`` into ``target_dir`` on free ports; return its path.

    ``overrides`` replace top-level keys after the port change (e.g. ``nginx={"enabled":
    False}``). Each server's ports are ``base + j × stride``, so the Triton block spans
    ``experts × replicas × stride`` ports.
    """
    source = INVENTORIES / f"{name}.yaml"
    data = _absolute_paths(yaml.safe_load(source.read_text()), source.parent)
    servers = sum(
        int(e.get("replicas", (data.get("defaults") or {}).get("replicas", 1)))
        for e in data["experts"]
    )
    stride = 10
    replicas = int((data.get("gateway") or {}).get("replicas", 2))
    # One block for Triton, the gateways and NGINX: blocks picked one by one could overlap
    # (none is bound yet), and the planner rightly refuses two components on one port.
    triton_ports = servers * stride + 3
    triton = free_block(triton_ports + replicas * 3 + 2)
    gateway = triton + triton_ports
    nginx = gateway + replicas * 3
    data["triton"] = {
        "http_base_port": triton,
        "grpc_base_port": triton + 1,
        "metrics_base_port": triton + 2,
        "port_stride": stride,
    }
    data["gateway"] = {
        **(data.get("gateway") or {}),
        "http_base_port": gateway,
        "grpc_base_port": gateway + replicas,
        "admin_base_port": gateway + 2 * replicas,
    }
    data["nginx"] = {**(data.get("nginx") or {}), "listen_port": nginx}
    data.update(overrides)
    target_dir.mkdir(parents=True, exist_ok=True)
    path = target_dir / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
