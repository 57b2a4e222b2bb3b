"""Gateway config per replica (validated by router_service.config) and Ansible variables.

Both are dumped from typed values, not templated: YAML is data, and the gateway's own pydantic
model both builds the document and checks it. Secrets never appear: only the *names* of the
environment variables and files that hold them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from expert_deploy.errors import RenderError
from expert_deploy.inventory.loader import LoadedInventory
from expert_deploy.plan.placement import GatewayPlacement
from expert_deploy.plan.planner import Plan
from expert_deploy.render.python_models import SERVED_MODEL
from router_service.config import (
    AuthConfig,
    ConfigError,
    ExpertSpec,
    GatewayConfig,
    KeepWarmConfig,
    LimitsConfig,
    RoutingTableSpec,
    TensorNames,
    UpstreamSpec,
    load_config,
)


def tensor_names(loaded: LoadedInventory) -> TensorNames:
    """The gateway's tensor names in the toolchain's backend version (e.g. seed vs random_seed)."""
    i = loaded.toolchain.ensemble_inputs
    o = loaded.toolchain.ensemble_outputs
    return TensorNames(
        text_input=i["text_input"],
        max_tokens=i["max_tokens"],
        stream=i["stream"],
        temperature=i["temperature"],
        top_p=i["top_p"],
        top_k=i["top_k"],
        stop_words=i["stop_words"],
        end_id=i["end_id"],
        seed=i["random_seed"],
        text_output=o["text_output"],
    )


def routing_table(loaded: LoadedInventory, plan: Plan) -> RoutingTableSpec:
    """Each expert → its cluster and the Triton servers of all its replicas."""
    experts = []
    for expert in loaded.inventory.experts:
        servers = [s for s in plan.servers if s.expert_id == expert.id]
        upstreams = tuple(
            UpstreamSpec(host=s.address, grpc_port=s.grpc_port, model=SERVED_MODEL)
            for s in sorted(servers, key=lambda s: s.replica)
        )
        experts.append(ExpertSpec(id=expert.id, clusters=(expert.cluster,), upstreams=upstreams))
    return RoutingTableSpec(generation=1, experts=tuple(experts))


def limits(loaded: LoadedInventory) -> LimitsConfig:
    """Request limits: max_tokens capped by the smallest expert's output room."""
    room = min(e.max_seq_len - 1 for e in loaded.inventory.experts)
    return LimitsConfig(max_tokens_cap=room, default_max_tokens=min(256, room))


def gateway_config(
    loaded: LoadedInventory, plan: Plan, placement: GatewayPlacement, router_dir: Path
) -> GatewayConfig:
    """The typed config of one gateway replica."""
    inventory = loaded.inventory
    auth = inventory.gateway.auth
    return GatewayConfig(
        host=placement.address,
        http_port=placement.http_port,
        grpc_port=placement.grpc_port,
        admin_host="127.0.0.1",  # the admin API stays on loopback (ARCHITECTURE.md)
        admin_port=placement.admin_port,
        router_dir=router_dir,
        routed_model_name="expert-router",
        routing=routing_table(loaded, plan),
        fallback=inventory.router.fallback,
        tensors=tensor_names(loaded),
        limits=limits(loaded),
        auth=AuthConfig(
            api_keys_env=auth.api_keys_env,
            api_keys_file=auth.api_keys_file,
            admin_token_env=auth.admin_token_env,
        ),
        cpus=inventory.gateway.cpus,
        keep_warm=KeepWarmConfig(interval_ms=inventory.gateway.keep_warm_ms),
    )


def dump_yaml(data: Any, header: str) -> str:
    """Stable YAML: key order as built, no aliases, a comment header."""
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return f"# {header}\n{body}"


def check_gateway_file(path: Path, expected: GatewayConfig) -> None:
    """Load the written file with the gateway's own loader and compare with what was meant.

    Raises:
        RenderError: the gateway would reject the file, or reads it differently.
    """
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        first = str(exc).splitlines()
        raise RenderError(f"rendered gateway config rejected: {'; '.join(first)}") from exc
    if loaded.model_copy(update={"router_dir": expected.router_dir}) != expected:
        raise RenderError(f"{path}: the gateway reads the rendered config differently")


def read_ansible_vars(workdir: Path) -> dict[str, Any]:
    """The work dir's rendered ``ansible/vars.yaml``; empty when never rendered or unreadable."""
    path = workdir / "rendered" / "ansible" / "vars.yaml"
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return values if isinstance(values, dict) else {}


def ansible_vars(
    loaded: LoadedInventory,
    plan: Plan,
    repositories: dict[str, str],
    nginx_grpc_port: int | None,
) -> dict[str, Any]:
    """Variables for the playbooks: where everything runs, on which ports, from which image."""
    inventory = loaded.inventory
    auth = inventory.gateway.auth
    return {
        "deployment": inventory.name,
        "runtime": inventory.runtime.kind,
        "triton_image": loaded.toolchain.triton_image,
        "toolchain": loaded.toolchain.name,
        "hosts": [
            {"name": h.name, "address": h.address, "ssh_user": h.ssh_user, "gpus": h.gpus.count}
            for h in inventory.hosts
        ],
        "servers": [
            {
                "name": s.name,
                "expert": s.expert_id,
                "replica": s.replica,
                "engine": _engine_of(loaded, s.expert_id),
                "host": s.host,
                "address": s.address,
                "device": s.device,
                "gpus": list(s.gpus),
                "http_port": s.http_port,
                "grpc_port": s.grpc_port,
                "metrics_port": s.metrics_port,
                "model_repository": repositories[s.name],
            }
            for s in plan.servers
        ],
        "gateways": [
            {
                "replica": g.replica,
                "host": g.host,
                "address": g.address,
                "http_port": g.http_port,
                "grpc_port": g.grpc_port,
                "admin_port": g.admin_port,
                "config": f"gateway/gateway-{g.replica}.yaml",
            }
            for g in plan.gateways
        ],
        "nginx": None
        if plan.nginx is None
        else {
            "host": plan.nginx.host,
            "address": plan.nginx.address,
            "listen_port": plan.nginx.listen_port,
            "grpc_listen_port": nginx_grpc_port,
            "config": "nginx/nginx.conf",
        },
        # Names only: the playbooks pass these variables through from the control node.
        "secret_env_names": [n for n in (auth.api_keys_env, auth.admin_token_env) if n],
    }


def _engine_of(loaded: LoadedInventory, expert_id: str) -> str:
    expert = loaded.inventory.expert(expert_id)
    assert expert is not None  # the plan only holds experts of this inventory
    return expert.engine
