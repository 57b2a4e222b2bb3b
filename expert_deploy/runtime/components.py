"""What the runtime starts: one ``Component`` per Triton server, gateway replica and NGINX.

Built from the plan (where, which ports) and the render result (which files); pure. The same
list drives every launcher, the deployment state and ``plan``'s diff against that state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from expert_deploy.plan.planner import Plan
from expert_deploy.render.deployment import RenderResult

ComponentKind = Literal["triton", "gateway", "nginx"]

#: Start order: experts first (the gateways' health checks want them), NGINX last.
START_ORDER: tuple[ComponentKind, ...] = ("triton", "gateway", "nginx")


@dataclass(frozen=True)
class Component:
    """One server the runtime starts and watches.

    ``name`` is unique in a deployment and stable across runs: ``triton/<expert>-<replica>``,
    ``gateway/<replica>``, ``nginx``. ``config_hash`` covers every rendered file of the
    component plus ``extra_hashes`` (engine or checkpoint identity), so a changed value means
    the running process no longer matches the inventory.
    """

    name: str
    kind: ComponentKind
    host: str
    address: str
    #: Model repository (triton), gateway YAML (gateway) or nginx.conf (nginx).
    config_path: Path
    config_hash: str
    #: Port name → number: http/grpc/metrics (triton), http/grpc/admin (gateway), listen/grpc.
    ports: Mapping[str, int]
    expert_id: str | None = None
    replica: int = 0
    gpus: tuple[int, ...] = ()
    device: str = "cpu"
    startup_budget_s: float = 120.0
    #: For triton: expert engine/checkpoint identities folded into ``config_hash``.
    extra_hashes: Mapping[str, str] = field(default_factory=dict)
    #: Digest of the inventory values behind it (runtime/diff.py ``spec_hashes``).
    spec_hash: str = ""

    @property
    def slug(self) -> str:
        """``name`` usable in file and container names (``triton-expert-0-0``)."""
        return self.name.replace("/", "-")


def components_for(
    plan: Plan,
    rendered: RenderResult,
    *,
    budgets: Mapping[str, float] | None = None,
    artifact_hashes: Mapping[str, str] | None = None,
    spec_hashes: Mapping[str, str] | None = None,
    gateway_budget_s: float = 60.0,
) -> list[Component]:
    """Every component of ``plan`` in start order.

    ``budgets`` maps expert id → start-up budget (the inventory's ``startup_budget_s``);
    ``artifact_hashes`` maps expert id → engine or checkpoint hash, when one exists;
    ``spec_hashes`` maps component name → spec hash (``runtime.diff.spec_hashes``).
    """
    budgets = budgets or {}
    artifact_hashes = artifact_hashes or {}
    root = rendered.root
    result: list[Component] = []
    for server in plan.servers:
        prefix = f"triton/{server.name}"
        # Without an engine or checkpoint (synthetic experts) the model repository itself is
        # what the expert runs, so its digest is the artifact identity swap and status show.
        artifact = artifact_hashes.get(server.expert_id) or "repo:" + _hash_files(
            rendered, prefix, {}
        )
        extra = {"artifact": artifact}
        result.append(
            Component(
                name=f"triton/{server.name}",
                kind="triton",
                host=server.host,
                address=server.address,
                config_path=root / "triton" / server.name,
                # Ports, GPUs and address are tritonserver's argv, not files: fold them in so
                # a server asked to move is restarted rather than kept on its old ports.
                config_hash=_hash_files(
                    rendered,
                    prefix,
                    {
                        **extra,
                        "argv": f"{server.address} {server.http_port} {server.grpc_port} "
                        f"{server.metrics_port} {server.device} {list(server.gpus)}",
                    },
                ),
                ports={
                    "http": server.http_port,
                    "grpc": server.grpc_port,
                    "metrics": server.metrics_port,
                },
                expert_id=server.expert_id,
                replica=server.replica,
                gpus=server.gpus,
                device=server.device,
                startup_budget_s=budgets.get(server.expert_id, 1800.0),
                extra_hashes=extra,
            )
        )
    for gateway in plan.gateways:
        path = f"gateway/gateway-{gateway.replica}.yaml"
        result.append(
            Component(
                name=f"gateway/{gateway.replica}",
                kind="gateway",
                host=gateway.host,
                address=gateway.address,
                config_path=root / path,
                config_hash=_hash_files(rendered, path, {}),
                ports={
                    "http": gateway.http_port,
                    "grpc": gateway.grpc_port,
                    "admin": gateway.admin_port,
                },
                replica=gateway.replica,
                startup_budget_s=gateway_budget_s,
            )
        )
    if plan.nginx is not None:
        result.append(
            Component(
                name="nginx",
                kind="nginx",
                host=plan.nginx.host,
                address=plan.nginx.address,
                config_path=root / "nginx" / "nginx.conf",
                config_hash=_hash_files(rendered, "nginx/nginx.conf", {}),
                ports={"listen": plan.nginx.listen_port, "grpc": plan.nginx.grpc_port},
                startup_budget_s=gateway_budget_s,
            )
        )
    specs = spec_hashes or {}
    return [replace(c, spec_hash=specs.get(c.name, "")) for c in result]


def _hash_files(rendered: RenderResult, prefix: str, extra: Mapping[str, str]) -> str:
    """sha256 over (path, file hash) of every rendered file under ``prefix``, plus ``extra``."""
    digest = hashlib.sha256()
    for f in rendered.files:
        text = str(f.path)
        if text == prefix or text.startswith(prefix + "/"):
            digest.update(f"{text}\0{f.sha256}\0{f.symlink_to or ''}\n".encode())
    for key in sorted(extra):
        digest.update(f"{key}\0{extra[key]}\n".encode())
    return digest.hexdigest()
