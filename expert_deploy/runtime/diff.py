"""What would change: the inventory's components against the deployed state (``plan``).

Each component gets a *spec hash*: a digest of the inventory values that decide what it runs
(an expert's settings, model source, placement and ports, the toolchain; a gateway's routing
table, ports, router inputs and limits; NGINX's ports and upstreams). ``up`` and ``swap``
record it; ``plan`` recomputes it without building or rendering anything and prints

    +    add       a component the state does not have
    ~    update    a gateway or NGINX restarted in place with its new config
    -/+  replace   an expert server stopped, then started again (its GPU cannot hold both)
    -    remove    a component the inventory no longer has

Terraform-style: ``plan`` exits 0 when nothing would change and 2 when something would.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from expert_deploy.builder.cache import sha256_file
from expert_deploy.inventory.loader import LoadedInventory
from expert_deploy.inventory.models import ArtifactSource, CbtmSource, FitSource, RouterSpec
from expert_deploy.plan.planner import Plan
from expert_deploy.runtime.state import DeploymentState

Action = Literal["+", "~", "-/+", "-"]


@dataclass(frozen=True)
class Change:
    action: Action
    name: str
    reason: str


def spec_hashes(loaded: LoadedInventory, plan: Plan, data_dir: Path) -> dict[str, str]:
    """Component name → spec hash for every component ``plan`` has."""
    inventory = loaded.inventory
    toolchain = loaded.toolchain.model_dump()
    router = _router_identity(inventory.router)
    hashes: dict[str, str] = {}
    for server in plan.servers:
        expert = inventory.expert(server.expert_id)
        assert expert is not None  # the plan only holds the inventory's experts
        settings = expert.model_dump(exclude={"replicas"})
        hashes[f"triton/{server.name}"] = _digest(
            {
                "expert": settings,
                "placement": [server.host, server.address, server.device, list(server.gpus)],
                "ports": [server.http_port, server.grpc_port, server.metrics_port],
                "toolchain": toolchain,
                "code": _source_digest(data_dir / "triton_models" / expert.engine),
            }
        )
    experts = [
        {
            "id": e.id,
            "cluster": e.cluster,
            "max_seq_len": e.max_seq_len,
            "upstreams": sorted(
                [s.address, s.grpc_port] for s in plan.servers if s.expert_id == e.id
            ),
        }
        for e in inventory.experts
    ]
    shared = {
        "experts": experts,
        "router": router,
        "fallback": inventory.router.fallback,
        "auth": inventory.gateway.auth.model_dump(mode="json"),
        "tensors": [loaded.toolchain.ensemble_inputs, loaded.toolchain.ensemble_outputs],
    }
    for gateway in plan.gateways:
        ports = [gateway.address, gateway.http_port, gateway.grpc_port, gateway.admin_port]
        hashes[f"gateway/{gateway.replica}"] = _digest({**shared, "ports": ports})
    if plan.nginx is not None:
        hashes["nginx"] = _digest(
            {
                "nginx": inventory.nginx.model_dump(mode="json"),
                "address": plan.nginx.address,
                "gateways": [[g.address, g.http_port, g.grpc_port] for g in plan.gateways],
            }
        )
    return hashes


def diff(desired: Mapping[str, str], state: DeploymentState) -> list[Change]:
    """Changes that turn ``state`` into ``desired`` (name → spec hash), in a stable order."""
    changes: list[Change] = []
    for name, spec in desired.items():
        record = state.components.get(name)
        if record is None:
            changes.append(Change("+", name, "not running"))
        elif record.spec_hash != spec:
            action: Action = "-/+" if record.kind == "triton" else "~"
            changes.append(Change(action, name, "inventory changed"))
        elif record.phase != "ready":
            changes.append(Change("~", name, f"recorded as {record.phase}; `up` finishes it"))
    changes.extend(
        Change("-", name, "no longer in the inventory")
        for name in sorted(state.components)
        if name not in desired
    )
    return changes


def _router_identity(spec: RouterSpec) -> dict[str, Any]:
    """What decides the router model, without fitting it (file contents by hash)."""
    source = spec.source
    identity: dict[str, Any] = {"k": spec.k, "scaler": spec.scaler, "kind": source.kind}
    if isinstance(source, FitSource):
        identity |= {
            "corpus": _file_digest(source.corpus),
            "seed": source.seed,
            "text_field": source.text_field,
        }
    elif isinstance(source, ArtifactSource):
        identity["router_json"] = _file_digest(source.path / "router.json")
    else:
        assert isinstance(source, CbtmSource)
        identity |= {"tfidf": _file_digest(source.tfidf), "kmeans": _file_digest(source.kmeans)}
    return identity


def _canonical(value: object) -> object:
    """JSON-ready and independent of hash randomization: sets become sorted lists."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted(str(v) for v in value)
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _digest(value: object) -> str:
    data = json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()


def _file_digest(path: Path) -> str:
    try:
        return sha256_file(path)
    except OSError:
        return f"unreadable:{path}"


def _source_digest(folder: Path) -> str:
    """The Python-backend model code an expert of this engine kind runs (empty for TRT-LLM)."""
    if not folder.is_dir():
        return ""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts):
        digest.update(f"{path.relative_to(folder)}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
