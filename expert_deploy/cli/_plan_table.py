"""The human view of a plan: one table of servers with their memory, one of the gateway."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from expert_deploy.inventory import LoadedInventory
from expert_deploy.plan.memory import GIB
from expert_deploy.plan.planner import Plan

_STATUS_STYLE = {"fits": "green", "tight": "yellow", "does_not_fit": "red"}


def _gib(value: int) -> str:
    return f"{value / GIB:.1f}"


def print_plan(loaded: LoadedInventory, plan: Plan, console: Console | None = None) -> None:
    if console is None:
        # Piped output (logs, CI) would otherwise be cut to 80 columns and lose the numbers.
        probe = Console()
        console = probe if probe.is_terminal else Console(width=max(probe.width, 132))
    inventory = loaded.inventory
    servers = Table(
        title=f"{plan.name}: Triton servers "
        f"({inventory.toolchain}, runtime {inventory.runtime.kind})"
    )
    for column in (
        "expert",
        "k",
        "host:GPUs",
        "engine",
        "ports",
        "weights",
        "KV",
        "seqs/batch",
        "fit",
    ):
        numeric = column in ("weights", "KV", "seqs/batch")
        servers.add_column(column, justify="right" if numeric else "left", no_wrap=True)
    for server in plan.servers:
        expert = inventory.expert(server.expert_id)
        assert expert is not None
        fit = plan.memory_of(server.expert_id)
        label = server.expert_id + (f" #{server.replica}" if expert.replicas > 1 else "")
        gpus = server.host + ":" + (",".join(map(str, server.gpus)) if server.gpus else "cpu")
        memory: tuple[str, ...] = ("-", "-", "-", "-")
        if fit is not None:
            style = _STATUS_STYLE[fit.status]
            memory = (
                _gib(fit.weight_bytes),
                _gib(fit.kv_budget_bytes),
                f"{fit.sequences_fit}/{fit.max_batch_size}",
                f"[{style}]{fit.status}[/{style}]",
            )
        engine = {"tensorrt_llm": "trtllm", "transformers": "hf", "synthetic": "synthetic"}[
            expert.engine
        ]
        if expert.engine != "synthetic":
            engine += f" {expert.quantization}" + (
                f" tp{expert.tp_size}" if expert.tp_size > 1 else ""
            )
        servers.add_row(
            label,
            str(expert.cluster),
            gpus,
            engine,
            f"{server.http_port}/{server.grpc_port}/{server.metrics_port}",
            *memory,
        )
    console.print(servers)
    console.print(
        "ports: http/grpc/metrics; weights and KV budget in GiB per GPU; "
        "seqs: full max_seq_len sequences the KV budget holds"
    )
    if plan.gateways:
        first, last = plan.gateways[0], plan.gateways[-1]
        console.print(
            f"gateway: {len(plan.gateways)} replicas on {first.host}, "
            f"http {first.http_port}-{last.http_port}, grpc {first.grpc_port}-{last.grpc_port}, "
            f"admin {first.admin_port}-{last.admin_port} (loopback)"
        )
    if plan.nginx:
        console.print(
            f"nginx: {plan.nginx.host}:{plan.nginx.listen_port} ({inventory.nginx.strategy})"
        )
